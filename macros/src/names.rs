//! The names the macros generate from the user's identifiers.
//!
//! Case conversion is `heck`'s, the same the framework uses for a task's or
//! a worker's short name (`framework/src/task/mod.rs`), so `HTTPClient` reads
//! `http_client` everywhere: as its message module, and as `worker:http_client`
//! or `task:http_client` in process titles and log lines.

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::Ident;

/// The module of a worker's message types: `HTTPClient` → `http_client`.
pub(crate) fn module(worker: &Ident) -> Ident {
    ident(&worker.unraw().to_string().to_snake_case(), worker.span())
}

/// The message type of a worker method: `fetch_url` → `FetchUrl`.
pub(crate) fn message(method: &Ident) -> Ident {
    ident(
        &method.unraw().to_string().to_upper_camel_case(),
        method.span(),
    )
}

/// The name a type is registered under (its identifier without `r#`).
pub(crate) fn registered(ty: &Ident) -> String {
    ty.unraw().to_string()
}

/// `name` as an identifier: raw if it is a keyword (`Type` → module
/// `r#type`), with a trailing `_` for the keywords that cannot be raw.
fn ident(name: &str, span: Span) -> Ident {
    if syn::parse_str::<Ident>(name).is_ok() {
        return Ident::new(name, span);
    }
    match name {
        "self" | "Self" | "super" | "crate" | "_" => Ident::new(&format!("{name}_"), span),
        _ => Ident::new_raw(name, span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Ident {
        Ident::new(name, Span::call_site())
    }

    #[test]
    fn modules_are_snake_case_with_acronyms_kept_whole() {
        for (ty, module_name) in [
            ("Calc", "calc"),
            ("HTTPClient", "http_client"),
            ("SendEmail", "send_email"),
            ("IOError", "io_error"),
            ("V2Worker", "v2_worker"),
            ("X", "x"),
        ] {
            assert_eq!(module(&id(ty)).to_string(), module_name, "{ty}");
        }
    }

    #[test]
    fn messages_are_upper_camel_case() {
        for (method, message_name) in [
            ("add", "Add"),
            ("add_later", "AddLater"),
            ("fetch_url", "FetchUrl"),
            ("get_HTTP_status", "GetHttpStatus"),
        ] {
            assert_eq!(message(&id(method)).to_string(), message_name, "{method}");
        }
    }

    #[test]
    fn raw_identifiers_and_keywords_give_valid_names() {
        assert_eq!(message(&Ident::new_raw("type", Span::call_site())), "Type");
        assert_eq!(module(&id("Type")).to_string(), "r#type");
        assert_eq!(module(&id("Crate")).to_string(), "crate_");
        assert_eq!(module(&id("Async")).to_string(), "r#async");
        assert_eq!(
            registered(&Ident::new_raw("Match", Span::call_site())),
            "Match"
        );
    }
}
