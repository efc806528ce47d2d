//! Procedural macros for daemonic (`#[task]`, `#[worker]`), re-exported by the
//! `daemonic` crate. Use them through `daemonic`, not directly.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{spanned::Spanned, Item, ItemImpl, Type};

/// Registers a `daemonic::task::Task` implementation so a daemon's fork server can run it
/// in a child process. Put it on the `impl Task for MyTask` block.
///
/// The task is identified in spawn requests by `module::path::MyTask`, a name
/// that is stable across the exec of the fork server (never a pointer).
#[proc_macro_attribute]
pub fn task(args: TokenStream, input: TokenStream) -> TokenStream {
    // On an error, the item is still emitted unchanged (and the registration
    // too where possible), so the user sees our message and not a cascade
    // of "cannot find type" errors from code that uses the item.
    let args_error = (!args.is_empty())
        .then(|| syn::Error::new(Span::call_site(), "#[task] takes no arguments"));
    let item = match syn::parse::<Item>(input) {
        Ok(item) => item,
        Err(err) => return err.to_compile_error().into(),
    };
    let expanded = match &item {
        Item::Impl(item) => expand_task(item),
        other => Err(syn::Error::new(
            other.span(),
            "#[task] goes on an `impl Task for YourType` block",
        )),
    };
    let (tokens, error) = match expanded {
        Ok(tokens) => (tokens, args_error),
        Err(err) => (quote! { #item }, Some(combine(args_error, err))),
    };
    let error = error.map(|e| e.to_compile_error());
    quote! { #tokens #error }.into()
}

/// `first` (if any) followed by `then`.
fn combine(first: Option<syn::Error>, then: syn::Error) -> syn::Error {
    match first {
        Some(mut first) => {
            first.combine(then);
            first
        }
        None => then,
    }
}

fn expand_task(item: &ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    let is_task_impl = item
        .trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|seg| seg.ident == "Task");
    if !is_task_impl {
        let (impl_token, self_ty) = (&item.impl_token, &item.self_ty);
        return Err(syn::Error::new_spanned(
            quote! { #impl_token #self_ty },
            "#[task] goes on an `impl Task for YourType` block",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "#[task] does not support generic tasks: a child process finds its task by a fixed name",
        ));
    }
    let self_ty = &item.self_ty;
    let Type::Path(path) = &**self_ty else {
        return Err(syn::Error::new_spanned(
            self_ty,
            "#[task] needs a named type",
        ));
    };
    let ident = path
        .path
        .segments
        .last()
        .map(|s| names::registered(&s.ident))
        .unwrap_or_default();
    Ok(quote! {
        #item

        impl ::daemonic::__private::RegisteredTask for #self_ty {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #ident);
        }

        const _: () = {
            #[::daemonic::__private::linkme::distributed_slice(::daemonic::__private::ENTRY_POINTS)]
            #[linkme(crate = ::daemonic::__private::linkme)]
            static ENTRY: ::daemonic::__private::EntryPoint = ::daemonic::__private::EntryPoint {
                name: <#self_ty as ::daemonic::__private::RegisteredTask>::NAME,
                run: ::daemonic::__private::run_task::<#self_ty>,
            };
        };
    })
}

mod names;
mod worker;

/// Turns a struct and its `impl` block into a worker whose methods run in
/// child processes.
///
/// On the struct: registers it (by a stable name) so the fork server can
/// start it. On the `impl` block: every `pub fn name(&mut self, args..) -> R`
/// (or `&self`, or `async fn`) becomes a message type
/// `snake_type::Name { args }` with `Result = Result<R, WorkerError>`,
/// handled by `WorkerPool<Type>`; `pool.call(msg)` folds that into
/// `Result<T, CallError<E>>` when `R` is spelled `Result<T, E>` (any type
/// named `Result`, aliases included), `Result<R, CallError>` otherwise. The
/// optional `fn started(&mut self, ctx: &mut WorkerContext)` and
/// `fn stopping(&mut self, ctx: &mut WorkerContext)` hooks run in the child.
///
/// A method may take the worker's context: an argument of type
/// `&mut WorkerContext` (by any path, or `&WorkerContext`), or any reference
/// argument named `ctx`, in any position. It is passed by the worker, not
/// sent: it is not a field of the message. At most one per method.
///
/// `async fn` methods taking `&self` may run side by side in one worker (the
/// pool's `max_concurrent`); every other method runs alone.
///
/// Names are converted with `heck`: the messages of `HTTPClient::fetch_url`
/// are `http_client::FetchUrl` (a keyword becomes a raw identifier:
/// `Type` → `r#type`). `Self` in a method's signature means the worker.
///
/// The worker may be declared in any module or inside a function. The
/// message structs live in the generated module, which sees the items of the
/// enclosing module (`use super::*`) but, like any module, not the items of a
/// function: argument types of a worker declared inside a function must be
/// declared outside it.
#[proc_macro_attribute]
pub fn worker(args: TokenStream, input: TokenStream) -> TokenStream {
    worker::expand(args.into(), input.into()).into()
}
