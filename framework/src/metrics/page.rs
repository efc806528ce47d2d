//! The live status page: one self-contained HTML document (inline style, no
//! script, no external asset) that the browser reloads every 2 seconds.

use super::recent::Restart;
use crate::Stats;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Seconds between reloads.
pub(super) const REFRESH_SECS: u32 = 2;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0d0}
header a{color:#9cc4ff}
main{padding:8px 24px 24px;max-width:1100px}
h2{font-size:15px;margin:22px 0 8px;text-transform:uppercase;letter-spacing:.05em;color:#4a5368}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:18px}
.card span{color:#5d6679;font-size:12px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e8;width:100%;margin-bottom:6px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eceef2;font-variant-numeric:tabular-nums}
th{background:#f9fafb;font-weight:600;color:#4a5368}
.pool{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:10px 14px;margin-bottom:12px}
.pool h3{margin:0 0 6px;font-size:16px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.ok{background:#dcf5e3;color:#17692f}.warn{background:#fff1cc;color:#8a5a00}.bad{background:#fde0e0;color:#a31515}
.muted{color:#5d6679}
";

/// Escapes text for HTML (names come from user code: pools, plugins, stats fields).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short human duration: `3m 12s` from a second up, `1.2ms` below.
fn dur(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    } else {
        format!("{d:.1?}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn card(out: &mut String, value: &str, label: &str) {
    let _ = write!(
        out,
        "<div class=card><b>{}</b><span>{}</span></div>",
        esc(value),
        esc(label)
    );
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// The page for `stats`, with `recent` restarts (newest first), as of `now`.
pub(super) fn render(stats: &Stats, recent: &[Restart], now: SystemTime) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let name = esc(&stats.name);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content={REFRESH_SECS}>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{name} status</title><style>{STYLE}</style></head><body>\
         <header><h1>{name} {}</h1><p>pid {} &middot; up {} &middot; updated {} &middot; \
         refreshes every {REFRESH_SECS} s &middot; <a href=\"/metrics\">metrics</a> &middot; \
         <a href=\"/status.json\">status.json</a></p></header><main>",
        badge("ok", "running"),
        stats.pid,
        dur(stats.uptime),
        humantime::format_rfc3339_seconds(now),
    );
    main_loop(&mut out, stats);
    pools(&mut out, stats);
    tasks(&mut out, stats);
    restarts(&mut out, recent);
    if !stats.plugins.is_empty() || !stats.extra.is_empty() {
        out.push_str("<h2>Plugins and more</h2><table>");
        if !stats.plugins.is_empty() {
            let _ = write!(
                out,
                "<tr><th>plugins</th><td>{}</td></tr>",
                esc(&stats.plugins.join(", "))
            );
        }
        for (k, v) in &stats.extra {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        }
        out.push_str("</table>");
    }
    out.push_str("</main></body></html>\n");
    out
}

fn main_loop(out: &mut String, stats: &Stats) {
    let l = &stats.main_loop;
    let health = if l.overruns == 0 {
        badge("ok", "on time")
    } else {
        badge("warn", &format!("{} overruns", l.overruns))
    };
    let _ = write!(out, "<h2>Main loop {health}</h2><div class=cards>");
    let interval = if l.interval.is_zero() {
        "as fast as possible".to_string()
    } else {
        format!("{:?}", l.interval)
    };
    card(out, &interval, "interval");
    card(out, &l.iterations.to_string(), "ticks");
    card(out, &l.skipped.to_string(), "skipped");
    card(out, &l.overruns.to_string(), "overruns");
    card(out, &dur(l.mean_execute), "execute mean");
    card(out, &dur(l.max_execute), "execute max");
    card(out, &dur(l.max_lateness), "lateness max");
    card(out, &mib(stats.memory.rss_bytes), "memory rss");
    card(out, &mib(stats.memory.private_bytes), "memory private");
    out.push_str("</div>");
}

fn pools(out: &mut String, stats: &Stats) {
    out.push_str("<h2>Worker pools</h2>");
    if stats.pools.is_empty() {
        out.push_str("<p class=muted>No worker pools.</p>");
    }
    for p in &stats.pools {
        let state = if p.failed {
            badge("bad", "FAILED")
        } else {
            badge("ok", "running")
        };
        let _ = write!(
            out,
            "<div class=pool><h3>{} {state}</h3><div class=cards>",
            esc(&p.name)
        );
        card(out, &p.size.to_string(), "size");
        card(out, &p.calls.to_string(), "calls");
        card(out, &p.returned.to_string(), "returned");
        card(out, &p.in_flight.to_string(), "in flight");
        card(out, &p.queued.to_string(), "queued");
        card(out, &p.restarts.to_string(), "restarts");
        card(out, &p.recycled.to_string(), "recycled");
        if let Some((p50, p90, p99)) = p.latency {
            card(
                out,
                &format!("{p50:.1?} / {p90:.1?} / {p99:.1?}"),
                "latency p50 / p90 / p99",
            );
        }
        out.push_str("</div>");
        if !p.errors.is_empty() {
            let errors: Vec<String> = p.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = write!(out, "<p>errors: {}</p>", esc(&errors.join(", ")));
        }
        out.push_str("<table><tr><th>pid</th><th>state</th><th>uptime</th><th>calls</th></tr>");
        for c in &p.children {
            let class = match c.state.as_str() {
                "ready" | "spare" => "ok",
                "killed" => "bad",
                _ => "warn",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.pid,
                badge(class, &c.state),
                dur(c.uptime),
                c.calls
            );
        }
        out.push_str("</table></div>");
    }
}

fn tasks(out: &mut String, stats: &Stats) {
    out.push_str("<h2>Tasks</h2>");
    if stats.tasks.is_empty() {
        out.push_str("<p class=muted>No task running.</p>");
        return;
    }
    out.push_str("<table><tr><th>task</th><th>running</th></tr>");
    for (name, n) in &stats.tasks {
        let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", esc(name));
    }
    out.push_str("</table>");
}

fn restarts(out: &mut String, recent: &[Restart]) {
    out.push_str("<h2>Recent restarts</h2>");
    if recent.is_empty() {
        out.push_str("<p class=muted>None since the page's server started.</p>");
        return;
    }
    out.push_str("<table><tr><th>time (UTC)</th><th>pool</th><th>pid</th><th>what</th></tr>");
    for r in recent {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            humantime::format_rfc3339_seconds(r.at),
            esc(&r.what),
            r.pid,
            esc(&r.why)
        );
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{ChildStats, PoolStats};

    #[test]
    fn the_page_shows_pools_workers_tasks_and_restarts_escaped() {
        let mut stats = Stats {
            name: "d<x>".into(),
            pid: 42,
            ..Default::default()
        };
        stats.pools.push(PoolStats {
            name: "hasher".into(),
            size: 1,
            children: vec![ChildStats {
                pid: 4242,
                uptime: Duration::from_secs(75),
                calls: 9,
                state: "ready".into(),
            }],
            ..Default::default()
        });
        stats.tasks.push(("mail".into(), 1));
        stats.extra.push(("k".into(), "<script>".into()));
        let recent = [Restart {
            at: SystemTime::UNIX_EPOCH,
            what: "hasher".into(),
            pid: 7,
            why: "died (killed by SIGKILL)".into(),
        }];
        let page = render(&stats, &recent, SystemTime::UNIX_EPOCH);
        assert!(page.contains("<meta http-equiv=refresh content=2>"));
        assert!(page.contains("d&lt;x&gt;") && !page.contains("d<x>"));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        for needle in [
            "<td>4242</td>",
            "1m 15s",
            "<td>9</td>",
            "<td>mail</td>",
            "died (killed by SIGKILL)",
            "1970-01-01T00:00:00Z",
        ] {
            assert!(page.contains(needle), "{needle} missing");
        }
        assert!(
            !page.contains("src=") && !page.contains("<link"),
            "no external assets"
        );
    }
}
