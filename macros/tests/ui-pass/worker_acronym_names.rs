//! Acronyms and raw identifiers convert the way `heck` converts them:
//! `HTTPClient`'s messages live in `http_client` (not `h_t_t_p_client`),
//! `fetch_URL` becomes `FetchUrl`, and a keyword-named module is raw.

#![allow(non_snake_case)]

use daemonic::worker::{Call, Worker, WorkerPool};
use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct HTTPClient {
    base: String,
}

#[daemonic::worker]
impl HTTPClient {
    pub fn fetch_URL(&mut self, path: String) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get_json(&self) -> usize {
        0
    }

    pub fn r#type(&self) -> String {
        "http".into()
    }
}

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct IOError;

#[daemonic::worker]
impl IOError {
    pub fn io(&self) {}
}

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Type;

#[daemonic::worker]
impl Type {
    pub fn name(&self) -> String {
        "type".into()
    }
}

#[allow(dead_code)]
async fn usage(
    client: daemonic::actix::Addr<WorkerPool<HTTPClient>>,
    io: daemonic::actix::Addr<WorkerPool<IOError>>,
    ty: daemonic::actix::Addr<WorkerPool<Type>>,
) {
    let _ = client.send(http_client::FetchUrl { path: "/".into() }).await;
    let _ = client.send(http_client::GetJson {}).await;
    let _ = client.send(http_client::Type {}).await;
    let _ = io.send(io_error::Io {}).await;
    let _ = ty.send(r#type::Name {}).await;
}

fn main() {
    assert!(HTTPClient::NAME.ends_with("::HTTPClient"));
    assert_eq!(<http_client::FetchUrl as Call<HTTPClient>>::NAME, "fetch_URL");
    assert_eq!(<http_client::Type as Call<HTTPClient>>::NAME, "type");
}
