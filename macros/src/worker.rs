//! `#[worker]` on a struct (registration) and on its `impl` block (one
//! message type per public method, and the child-side dispatcher).

use crate::names;
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, Item, ItemImpl, ItemStruct, Pat, ReturnType, Type, Visibility};

/// On an error the item is still emitted unchanged next to the
/// `compile_error!`, so the user sees our message and not a cascade of
/// "cannot find type" errors from the code that uses the item.
pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let args_error = (!args.is_empty())
        .then(|| syn::Error::new(Span::call_site(), "#[worker] takes no arguments"))
        .map(|e| e.to_compile_error());
    let item = match syn::parse2::<Item>(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let result = match &item {
        Item::Struct(item) => expand_struct(item),
        Item::Impl(item) => expand_impl(item),
        other => Err(syn::Error::new(
            other.span(),
            "#[worker] goes on a struct and on its inherent `impl` block",
        )),
    };
    let tokens = result.unwrap_or_else(|e| {
        let e = e.to_compile_error();
        quote! { #item #e }
    });
    quote! { #args_error #tokens }
}

fn expand_struct(item: &ItemStruct) -> syn::Result<TokenStream> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "#[worker] does not support generic structs: a child process finds its worker by a fixed name",
        ));
    }
    let ident = &item.ident;
    let name = names::registered(ident);
    Ok(quote! {
        #item

        impl ::daemonic::__private::Worker for #ident {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name);
        }

        const _: () = {
            #[::daemonic::__private::linkme::distributed_slice(::daemonic::__private::ENTRY_POINTS)]
            #[linkme(crate = ::daemonic::__private::linkme)]
            static ENTRY: ::daemonic::__private::EntryPoint = ::daemonic::__private::EntryPoint {
                name: <#ident as ::daemonic::__private::Worker>::NAME,
                run: ::daemonic::__private::run_worker::<#ident>,
            };
        };
    })
}

struct Method {
    /// Visibility of the message type, from the method's.
    vis: TokenStream,
    ident: syn::Ident,
    message: syn::Ident,
    args: Vec<(syn::Ident, Type)>,
    /// Where the `&mut WorkerContext` argument goes among the method's
    /// arguments, if it takes one.
    context_at: Option<usize>,
    output: TokenStream,
    /// The return type is spelled `Result<..>`: `call` splits it into the
    /// value and the method's own error.
    fallible: bool,
    is_async: bool,
    /// Takes `&self`: an `async` method of this kind may overlap others of
    /// its kind in one worker (`max_concurrent`).
    shared: bool,
}

impl Method {
    /// The arguments of a call of the method, with `ctx` in its place.
    fn call_args(&self) -> Vec<TokenStream> {
        let mut args: Vec<TokenStream> = self.args.iter().map(|(n, _)| quote! { #n }).collect();
        if let Some(at) = self.context_at {
            args.insert(at, quote! { ctx });
        }
        args
    }
}

fn is_hook(name: &str) -> bool {
    name == "started" || name == "stopping"
}

fn expand_impl(item: &ItemImpl) -> syn::Result<TokenStream> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[worker] goes on the inherent `impl YourWorker` block, not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "#[worker] does not support generic impl blocks",
        ));
    }
    let self_ty = &item.self_ty;
    let Type::Path(type_path) = &**self_ty else {
        return Err(syn::Error::new_spanned(
            self_ty,
            "#[worker] needs a named type",
        ));
    };
    let type_ident = type_path
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| syn::Error::new_spanned(self_ty, "#[worker] needs a named type"))?;
    let module = names::module(&type_ident);

    let mut methods = Vec::new();
    // Invalid methods are reported together and left out; the rest still
    // expands, so the struct keeps its `WorkerMethods` impl and the only
    // errors are ours.
    let mut method_errors: Option<syn::Error> = None;
    let mut hooks = Vec::new();
    for impl_item in &item.items {
        let ImplItem::Fn(f) = impl_item else { continue };
        let name = f.sig.ident.to_string();
        if is_hook(&name) {
            hooks.push(f.sig.ident.clone());
            continue;
        }
        // Methods with a visibility become messages with the same reach
        // (one module deeper, so restricted forms widen to the impl's module).
        let vis = match &f.vis {
            Visibility::Inherited => continue,
            Visibility::Public(_) => quote! { pub },
            Visibility::Restricted(r) if r.path.is_ident("crate") => quote! { pub(crate) },
            Visibility::Restricted(_) => quote! { pub(super) },
        };
        // Associated functions (`pub fn new(..) -> Self`) stay ordinary
        // functions of the type: only methods run in a worker.
        if !matches!(f.sig.inputs.first(), Some(FnArg::Receiver(_))) {
            continue;
        }
        match parse_method(f, vis, self_ty) {
            Ok(method) => methods.push(method),
            Err(e) => match &mut method_errors {
                Some(errors) => errors.combine(e),
                None => method_errors = Some(e),
            },
        }
    }

    // Only the structs live in the module (their field types are the
    // user's, found through `use super::*`); every impl is written next to
    // the `impl` block, where the worker type can be named even when it is
    // declared inside a function or reached through a path.
    let structs = methods.iter().map(|m| {
        let message = &m.message;
        let vis = &m.vis;
        let fields = m.args.iter().map(|(name, ty)| {
            quote_spanned! {ty.span()=> #vis #name: #ty }
        });
        let doc = format!("Calls `{}::{}` in a worker process.", type_ident, m.ident);
        quote! {
            #[doc = #doc]
            #vis struct #message { #(#fields,)* }
        }
    });

    let impls = methods.iter().enumerate().map(|(index, m)| {
        let message = &m.message;
        let output = &m.output;
        let index = index as u16;
        let method_name = m.ident.unraw().to_string();
        let serde = serde_impls(&type_ident, &module, m);
        let fold = if m.fallible {
            quote! {
                type Value = <#output as ::daemonic::__private::MethodResult>::Value;
                type Error = <#output as ::daemonic::__private::MethodResult>::Error;
                fn fold(output: Self::Output) -> ::core::result::Result<Self::Value, Self::Error> {
                    ::daemonic::__private::MethodResult::into_result(output)
                }
            }
        } else {
            quote! {
                type Value = #output;
                type Error = ::core::convert::Infallible;
                fn fold(output: Self::Output) -> ::core::result::Result<Self::Value, Self::Error> {
                    ::core::result::Result::Ok(output)
                }
            }
        };
        quote! {
            #serde

            impl ::daemonic::__private::actix::Message for #module::#message {
                type Result = ::core::result::Result<#output, ::daemonic::__private::WorkerError>;
            }

            impl ::daemonic::__private::Call<#self_ty> for #module::#message {
                type Output = #output;
                #fold
                const METHOD: u16 = #index;
                const NAME: &'static str = #method_name;
            }

            impl ::daemonic::__private::actix::Handler<#module::#message> for ::daemonic::__private::WorkerPool<#self_ty> {
                type Result = ::daemonic::__private::CallResponse<#output>;

                fn handle(
                    &mut self,
                    message: #module::#message,
                    ctx: &mut <Self as ::daemonic::__private::actix::Actor>::Context,
                ) -> Self::Result {
                    self.handle_call(message, ctx)
                }
            }
        }
    });

    let arms = methods.iter().enumerate().map(|(index, m)| {
        let index = index as u16;
        let message = &m.message;
        let ident = &m.ident;
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let args = m.call_args();
        let call = if m.is_async {
            quote! {
                ::daemonic::__private::Executor::of(ctx).block_on(<#self_ty>::#ident(self, #(#args),*))
            }
        } else {
            quote! { <#self_ty>::#ident(self, #(#args),*) }
        };
        quote! {
            #index => {
                let #module::#message { #(#names),* } = ::daemonic::__private::decode_args(args)?;
                let output = #call;
                ::daemonic::__private::encode_output(&output)
            }
        }
    });

    // The `async` methods as futures, for a worker that runs them
    // concurrently: `&self` methods borrow the state shared, the others
    // exclusively (the child starts those only when nothing else runs).
    let async_arms = methods.iter().enumerate().filter(|(_, m)| m.is_async).map(|(index, m)| {
        let index = index as u16;
        let message = &m.message;
        let ident = &m.ident;
        let names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
        let args = m.call_args();
        let (borrow, receiver) = if m.shared {
            (quote! { let __this = this.borrow(); }, quote! { &*__this })
        } else {
            (quote! { let mut __this = this.borrow_mut(); }, quote! { &mut *__this })
        };
        quote! {
            #index => {
                let #module::#message { #(#names),* } = ::daemonic::__private::decode_args(args)?;
                ::core::result::Result::Ok(::std::boxed::Box::pin(async move {
                    #[allow(unused_mut)]
                    let mut ctx = ctx;
                    #[allow(unused_variables)]
                    let ctx = &mut ctx;
                    #borrow
                    let output = <#self_ty>::#ident(#receiver, #(#args),*).await;
                    ::daemonic::__private::encode_output(&output)
                }))
            }
        }
    });
    let kinds = methods.iter().map(|m| match (m.is_async, m.shared) {
        (false, _) => quote! { ::daemonic::__private::MethodKind::Sync },
        (true, false) => quote! { ::daemonic::__private::MethodKind::Exclusive },
        (true, true) => quote! { ::daemonic::__private::MethodKind::Shared },
    });

    let hook = |name: &str| {
        let hook = format_ident!("{}", name);
        hooks.iter().any(|h| h == name).then(|| {
            quote! {
                fn #hook(&mut self, ctx: &mut ::daemonic::__private::WorkerContext) {
                    <#self_ty>::#hook(self, ctx)
                }
            }
        })
    };
    let (started, stopping) = (hook("started"), hook("stopping"));
    let method_names = methods.iter().map(|m| m.ident.unraw().to_string());
    let method_errors = method_errors.map(|e| e.to_compile_error());
    let module_doc =
        format!("Message types of `{type_ident}`'s worker methods (one per `pub fn`).");

    Ok(quote! {
        #item

        #[doc = #module_doc]
        #[allow(private_interfaces, private_bounds)]
        pub mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(#structs)*
        }

        #(#impls)*

        impl ::daemonic::__private::WorkerMethods for #self_ty {
            const METHODS: &'static [&'static str] = &[#(#method_names),*];
            const KINDS: &'static [::daemonic::__private::MethodKind] = &[#(#kinds),*];

            fn dispatch(
                &mut self,
                ctx: &mut ::daemonic::__private::WorkerContext,
                method: u16,
                args: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::daemonic::__private::DispatchError> {
                #[allow(unused_variables)]
                let ctx = ctx;
                match method {
                    #(#arms)*
                    other => ::core::result::Result::Err(::daemonic::__private::DispatchError::UnknownMethod(other)),
                }
            }

            // The borrow lives across the method's awaits on purpose: the
            // worker starts an exclusive call only when no other runs
            // (framework/src/worker/concurrent.rs), so it never conflicts.
            #[allow(clippy::await_holding_refcell_ref)]
            fn dispatch_async(
                this: ::std::rc::Rc<::core::cell::RefCell<Self>>,
                ctx: ::daemonic::__private::WorkerContext,
                method: u16,
                args: &[u8],
            ) -> ::core::result::Result<::daemonic::__private::AsyncCall, ::daemonic::__private::DispatchError> {
                #[allow(unreachable_code, unused_variables)]
                match method {
                    #(#async_arms)*
                    other => ::core::result::Result::Err(::daemonic::__private::DispatchError::UnknownMethod(other)),
                }
            }

            #started
            #stopping
        }

        #method_errors
    })
}

/// `tokens` with every `Self` replaced by the worker's type: a message type
/// is its own `Self`, so a method's `Self` must be spelled out.
fn with_self(tokens: &TokenStream, self_ty: &Type) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Ident(ident) if ident == "Self" => {
                quote_spanned! {ident.span()=> #self_ty }
            }
            TokenTree::Group(group) => {
                let mut replaced =
                    proc_macro2::Group::new(group.delimiter(), with_self(&group.stream(), self_ty));
                replaced.set_span(group.span());
                TokenTree::Group(replaced).into_token_stream()
            }
            other => other.into_token_stream(),
        })
        .collect()
}

/// `Serialize` and `Deserialize` for a message type, written out rather than
/// derived so that each argument is (de)serialized by a call spanned at its
/// type: an argument type without serde support then gets exactly one error
/// per trait, on the argument in the user's signature (the derive reports
/// several, some on the `#[worker]` line, with notes inside serde's private
/// modules). The encoding is a sequence of the arguments in order, which is
/// what the derive produced under `rmp_serde`'s default configuration.
fn serde_impls(type_ident: &syn::Ident, module: &syn::Ident, m: &Method) -> TokenStream {
    let message = &m.message;
    let message = quote! { #module::#message };
    let serde = quote! { ::daemonic::__private::serde };
    let len = m.args.len();
    let bindings: Vec<_> = (0..len).map(|i| format_ident!("__arg{}", i)).collect();
    let serialize_args = m.args.iter().map(|(name, ty)| {
        let call = quote_spanned! {ty.span()=> worker_argument_must_implement_serialize::<_, #ty> };
        quote! { #call(&mut __tuple, &self.#name)?; }
    });
    let deserialize_args = m.args.iter().zip(&bindings).enumerate().map(
        |(index, ((_, ty), binding))| {
            let call =
                quote_spanned! {ty.span()=> worker_argument_must_implement_deserialize::<_, #ty> };
            quote! { let #binding = #call(&mut __seq, #index, &self)?; }
        },
    );
    let names = m.args.iter().map(|(name, _)| name);
    let expecting = format!("the arguments of `{}::{}`", type_ident, m.ident);
    quote! {
        impl #serde::Serialize for #message {
            fn serialize<__S: #serde::Serializer>(
                &self,
                __serializer: __S,
            ) -> ::core::result::Result<__S::Ok, __S::Error> {
                #[allow(dead_code)]
                fn worker_argument_must_implement_serialize<__T: #serde::ser::SerializeTuple, __V: #serde::Serialize>(
                    tuple: &mut __T,
                    value: &__V,
                ) -> ::core::result::Result<(), __T::Error> {
                    __T::serialize_element(tuple, value)
                }
                #[allow(unused_mut)]
                let mut __tuple = #serde::Serializer::serialize_tuple(__serializer, #len)?;
                #(#serialize_args)*
                #serde::ser::SerializeTuple::end(__tuple)
            }
        }

        impl<'de> #serde::Deserialize<'de> for #message {
            fn deserialize<__D: #serde::Deserializer<'de>>(
                __deserializer: __D,
            ) -> ::core::result::Result<Self, __D::Error> {
                #[allow(dead_code)]
                fn worker_argument_must_implement_deserialize<'de, __A: #serde::de::SeqAccess<'de>, __V: #serde::Deserialize<'de>>(
                    seq: &mut __A,
                    index: usize,
                    expected: &dyn #serde::de::Expected,
                ) -> ::core::result::Result<__V, __A::Error> {
                    match __A::next_element::<__V>(seq)? {
                        ::core::option::Option::Some(value) => ::core::result::Result::Ok(value),
                        ::core::option::Option::None => ::core::result::Result::Err(
                            <__A::Error as #serde::de::Error>::invalid_length(index, expected),
                        ),
                    }
                }
                struct __Visitor;
                impl<'de> #serde::de::Visitor<'de> for __Visitor {
                    type Value = #message;

                    fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str(#expecting)
                    }

                    #[allow(unused_mut, unused_variables)]
                    fn visit_seq<__A: #serde::de::SeqAccess<'de>>(
                        self,
                        mut __seq: __A,
                    ) -> ::core::result::Result<#message, __A::Error> {
                        #(#deserialize_args)*
                        ::core::result::Result::Ok(#message { #(#names: #bindings),* })
                    }
                }
                #serde::Deserializer::deserialize_tuple(__deserializer, #len, __Visitor)
            }
        }
    }
}

fn parse_method(f: &syn::ImplItemFn, vis: TokenStream, self_ty: &Type) -> syn::Result<Method> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[worker] methods cannot be generic: each method becomes a message type with concrete fields",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let shared = match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() => r.mutability.is_none(),
        Some(FnArg::Receiver(r)) => {
            return Err(syn::Error::new_spanned(
                r,
                "#[worker] methods take `&mut self` or `&self`, not `self` by value: the worker's state lives on in the child between calls",
            ))
        }
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "#[worker] methods need a `&mut self` or `&self` receiver (a public associated function cannot run in a worker)",
            ))
        }
    };
    let mut args = Vec::new();
    let mut context_at = None;
    for (position, input) in inputs.enumerate() {
        let FnArg::Typed(pat_type) = input else {
            continue;
        };
        if is_context(pat_type) {
            if context_at.is_some() {
                return Err(syn::Error::new_spanned(
                    pat_type,
                    "#[worker] methods take at most one `&mut WorkerContext` argument",
                ));
            }
            context_at = Some(position);
            continue;
        }
        let Pat::Ident(pat) = &*pat_type.pat else {
            return Err(syn::Error::new_spanned(
                &pat_type.pat,
                "#[worker] method arguments must be plain names (`name: Type`): they become message fields",
            ));
        };
        if let Type::Reference(r) = &*pat_type.ty {
            return Err(syn::Error::new_spanned(
                r,
                "#[worker] method arguments must be owned values: they are serialized and sent to a child process \
                 (the one reference a method may take is `ctx: &mut WorkerContext`)",
            ));
        }
        let ty = &*pat_type.ty;
        let ty = syn::parse2(with_self(&quote! { #ty }, self_ty)).unwrap_or_else(|_| ty.clone());
        args.push((pat.ident.clone(), ty));
    }
    let (output, fallible) = match &sig.output {
        ReturnType::Default => (quote! { () }, false),
        ReturnType::Type(_, ty) => (with_self(&quote! { #ty }, self_ty), is_result(ty)),
    };
    Ok(Method {
        vis,
        ident: sig.ident.clone(),
        message: names::message(&sig.ident),
        args,
        context_at,
        output,
        fallible,
        is_async: sig.asyncness.is_some(),
        shared,
    })
}

/// A `&mut WorkerContext` argument (by its type's last segment, so any path
/// to it works), or any reference argument named `ctx`: the worker passes
/// its context there instead of a message field.
fn is_context(arg: &syn::PatType) -> bool {
    let Type::Reference(reference) = &*arg.ty else {
        return false;
    };
    let named_ctx = matches!(&*arg.pat, Pat::Ident(p) if p.ident == "ctx");
    let typed = matches!(
        &*reference.elem,
        Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "WorkerContext")
    );
    typed || named_ctx
}

/// Whether a return type is spelled `Result<..>` (`std::result::Result`,
/// `io::Result`, `anyhow::Result`, …): its `Ok` and `Err` are split by
/// `call`. Any `Result` type of two parameters or an alias of `Result`
/// works; a type named `Result` that is not one fails to compile with a
/// note on `MethodResult`.
fn is_result(ty: &Type) -> bool {
    matches!(
        ty,
        Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "Result")
    )
}
