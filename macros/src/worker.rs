//! `#[worker]` on a struct (registration) and on its `impl` block (one
//! message type per public method, and the child-side dispatcher).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, Item, ItemImpl, ItemStruct, Pat, ReturnType, Type, Visibility};

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(Span::call_site(), "#[worker] takes no arguments")
            .to_compile_error();
    }
    let result = match syn::parse2::<Item>(input) {
        Ok(Item::Struct(item)) => expand_struct(&item),
        Ok(Item::Impl(item)) => expand_impl(&item),
        Ok(other) => Err(syn::Error::new(
            other.span(),
            "#[worker] goes on a struct and on its inherent `impl` block",
        )),
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| e.to_compile_error())
}

fn expand_struct(item: &ItemStruct) -> syn::Result<TokenStream> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "#[worker] does not support generic structs: a child process finds its worker by a fixed name",
        ));
    }
    let ident = &item.ident;
    let name = ident.to_string();
    Ok(quote! {
        #item

        impl ::daemonic::worker::Worker for #ident {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #name);
        }

        const _: () = {
            #[::daemonic::__private::linkme::distributed_slice(::daemonic::process::ENTRY_POINTS)]
            #[linkme(crate = ::daemonic::__private::linkme)]
            static ENTRY: ::daemonic::process::EntryPoint = ::daemonic::process::EntryPoint {
                name: <#ident as ::daemonic::worker::Worker>::NAME,
                run: ::daemonic::worker::run_in_child::<#ident>,
            };
        };
    })
}

struct Method {
    ident: syn::Ident,
    message: syn::Ident,
    args: Vec<(syn::Ident, Type)>,
    output: TokenStream,
    is_async: bool,
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(ch.to_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn pascal_case(name: &str) -> String {
    name.split('_')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect()
}

fn is_hook(name: &str) -> bool {
    name == "started" || name == "stopping"
}

fn expand_impl(item: &ItemImpl) -> syn::Result<TokenStream> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[worker] goes on the inherent `impl YourWorker` block, not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "#[worker] does not support generic impl blocks",
        ));
    }
    let self_ty = &item.self_ty;
    let Type::Path(type_path) = &**self_ty else {
        return Err(syn::Error::new(
            self_ty.span(),
            "#[worker] needs a named type",
        ));
    };
    let type_ident = type_path
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| syn::Error::new(self_ty.span(), "#[worker] needs a named type"))?;
    let module = format_ident!("{}", snake_case(&type_ident.to_string()));

    let mut methods = Vec::new();
    let mut hooks = Vec::new();
    for impl_item in &item.items {
        let ImplItem::Fn(f) = impl_item else { continue };
        let name = f.sig.ident.to_string();
        if is_hook(&name) {
            hooks.push(f.sig.ident.clone());
            continue;
        }
        if !matches!(f.vis, Visibility::Public(_)) {
            continue;
        }
        methods.push(parse_method(f)?);
    }

    let messages = methods.iter().enumerate().map(|(index, m)| {
        let message = &m.message;
        let output = &m.output;
        let index = index as u16;
        let method_name = m.ident.to_string();
        let fields = m.args.iter().map(|(name, ty)| {
            quote_spanned! {ty.span()=> pub #name: #ty }
        });
        let doc = format!("Calls `{}::{}` in a worker process.", type_ident, m.ident);
        quote! {
            #[doc = #doc]
            #[derive(::daemonic::__private::serde::Serialize, ::daemonic::__private::serde::Deserialize)]
            #[serde(crate = "::daemonic::__private::serde")]
            pub struct #message { #(#fields,)* }

            impl ::daemonic::actix::Message for #message {
                type Result = ::core::result::Result<#output, ::daemonic::worker::WorkerError>;
            }

            impl ::daemonic::worker::Call for #message {
                type Worker = super::#type_ident;
                type Output = #output;
                const METHOD: u16 = #index;
                const NAME: &'static str = #method_name;
            }
        }
    });

    let handlers = methods.iter().map(|m| {
        let message = &m.message;
        let output = &m.output;
        quote! {
            impl ::daemonic::actix::Handler<#module::#message> for ::daemonic::worker::WorkerPool<#self_ty> {
                type Result = ::daemonic::actix::ResponseFuture<
                    ::core::result::Result<#output, ::daemonic::worker::WorkerError>,
                >;

                fn handle(
                    &mut self,
                    message: #module::#message,
                    ctx: &mut <Self as ::daemonic::actix::Actor>::Context,
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
        let call = if m.is_async {
            quote! { ctx.block_on(self.#ident(#(#names),*)) }
        } else {
            quote! { self.#ident(#(#names),*) }
        };
        quote! {
            #index => {
                let #module::#message { #(#names),* } = ::daemonic::worker::decode_args(args)?;
                let output = #call;
                ::daemonic::worker::encode_output(&output)
            }
        }
    });

    let started = if hooks.iter().any(|h| h == "started") {
        quote! { fn started(&mut self, ctx: &mut ::daemonic::worker::WorkerContext) { #self_ty::started(self, ctx) } }
    } else {
        quote! {}
    };
    let stopping = if hooks.iter().any(|h| h == "stopping") {
        quote! { fn stopping(&mut self, ctx: &mut ::daemonic::worker::WorkerContext) { #self_ty::stopping(self, ctx) } }
    } else {
        quote! {}
    };
    let method_names = methods.iter().map(|m| m.ident.to_string());

    Ok(quote! {
        #item

        /// Message types of the worker's methods (one per `pub fn`).
        #[allow(private_interfaces, private_bounds)]
        pub mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(#messages)*
        }

        #(#handlers)*

        impl ::daemonic::worker::WorkerMethods for #self_ty {
            const METHODS: &'static [&'static str] = &[#(#method_names),*];

            fn dispatch(
                &mut self,
                ctx: &mut ::daemonic::worker::WorkerContext,
                method: u16,
                args: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::daemonic::worker::DispatchError> {
                #[allow(unused_variables)]
                let ctx = ctx;
                match method {
                    #(#arms)*
                    other => ::core::result::Result::Err(::daemonic::worker::DispatchError::UnknownMethod(other)),
                }
            }

            #started
            #stopping
        }
    })
}

fn parse_method(f: &syn::ImplItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "#[worker] methods cannot be generic: each method becomes a message type with concrete fields",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
        Some(FnArg::Receiver(r)) => {
            return Err(syn::Error::new(
                r.span(),
                "#[worker] methods take `&mut self` or `&self`, not `self` by value: the worker's state lives on in the child between calls",
            ))
        }
        _ => {
            return Err(syn::Error::new(
                sig.span(),
                "#[worker] methods need a `&mut self` or `&self` receiver (a public associated function cannot run in a worker)",
            ))
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pat_type) = input else {
            continue;
        };
        let Pat::Ident(pat) = &*pat_type.pat else {
            return Err(syn::Error::new(
                pat_type.pat.span(),
                "#[worker] method arguments must be plain names (`name: Type`): they become message fields",
            ));
        };
        if let Type::Reference(r) = &*pat_type.ty {
            return Err(syn::Error::new(
                r.span(),
                "#[worker] method arguments must be owned values: they are serialized and sent to a child process",
            ));
        }
        args.push((pat.ident.clone(), (*pat_type.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => quote! { () },
        ReturnType::Type(_, ty) => quote! { #ty },
    };
    Ok(Method {
        ident: sig.ident.clone(),
        message: format_ident!("{}", pascal_case(&sig.ident.to_string())),
        args,
        output,
        is_async: sig.asyncness.is_some(),
    })
}
