//! The supervision_tree example from outside, over real HTTP: an address
//! held by an actix-web handler keeps answering across its pool's
//! restarts, and a crash loop stays inside its subtree while the rest
//! serves.

use integration_tests::*;

/// One real HTTP GET: status and body.
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), body)
}

#[test]
fn handlers_keep_their_addresses_across_restarts_and_a_crash_loop_is_contained() {
    let mut app = Daemon::start(&example_bin("supervision_tree"), ["--port", "0"]);
    let base = wait_for_value(DEADLINE, "the server to listen", || {
        app.stderr()
            .lines()
            .find_map(|l| l.strip_prefix("supervision_tree: listening on "))
            .map(str::to_string)
    });
    let (status, body) = get(&format!("{base}/render?n=1"));
    assert_eq!(
        (status, body.starts_with("thumbnail #1 by pid")),
        (200, true),
        "{body}"
    );

    // One crash: the renderer pool fails, `thumbnails` restarts it in
    // place; the handler's address answers again.
    let (_, body) = get(&format!("{base}/crash"));
    assert!(body.contains("died"), "{body}");
    let (status, body) = get(&format!("{base}/render?n=2"));
    assert_eq!(status, 200, "served after the pool's restart: {body}");

    // A crash loop: `thumbnails` gives up, `app` restarts the subtree. The
    // decoder, outside it, answers every time.
    for round in 0..3 {
        let (_, body) = get(&format!("{base}/crash"));
        assert!(body.contains("renderer:"), "{body}");
        let (status, body) = get(&format!("{base}/decode?input=loop{round}"));
        assert_eq!(
            (status, body.trim()),
            (200, format!("{round}pool").as_str())
        );
    }
    wait_for(DEADLINE, "the subtree restarted by app", || {
        app.stderr().contains("restarted app/thumbnails")
    });
    assert!(app.stderr().contains("supervisor thumbnails gave up"));
    let (status, body) = get(&format!("{base}/render?n=3"));
    assert_eq!(
        status, 200,
        "the same address, after the subtree's restart: {body}"
    );
    let (_, tree) = get(&format!("{base}/tree"));
    assert!(tree.starts_with("app (one_for_one, running"), "{tree}");
    assert!(
        tree.contains("last failure: supervisor thumbnails gave up"),
        "{tree}"
    );
    assert!(
        tree.contains("warm-cache: actor temporary terminated"),
        "{tree}"
    );
    // A child taken out for good: gone from the tree, its address closed,
    // its siblings serving.
    assert_eq!(
        get(&format!("{base}/remove?child=hits")),
        (200, "removed hits\n".to_string())
    );
    let (status, _) = get(&format!("{base}/hits"));
    assert_eq!(status, 503, "a removed actor no longer answers");
    let (_, tree) = get(&format!("{base}/tree"));
    assert!(!tree.contains("hits:"), "{tree}");
    let (status, body) = get(&format!("{base}/decode?input=stressed"));
    assert_eq!((status, body.as_str()), (200, "desserts\n"));
    let (status, body) = get(&format!("{base}/remove?child=hits"));
    assert_eq!(status, 404, "{body}");
    assert!(app.is_running(), "the application never went down");
}
