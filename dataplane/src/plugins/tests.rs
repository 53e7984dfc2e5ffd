//! The runtime with plugins that record what they see: phase order, precedence when merging, `_meta`, the
//! consumer's turn, global rules, asynchronous access and body filters.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, request, response};

use super::*;
use crate::router::Vars;

type Seen = Arc<Mutex<Vec<String>>>;

#[derive(Debug)]
struct Recorder {
    name: &'static str,
    deny_in: Option<Phases>,
    seen: Seen,
    wait: bool,
}

impl Recorder {
    fn note(&self, what: &str) {
        self.seen.lock().unwrap().push(format!("{} {what}", self.name));
    }
}

struct Upper;

impl BodyFilter for Upper {
    fn data(&mut self, chunk: Bytes) -> Bytes {
        Bytes::from(chunk.to_ascii_uppercase())
    }
    fn end(&mut self) -> Bytes {
        Bytes::from_static(b"!")
    }
}

impl Plugin for Recorder {
    fn phases(&self) -> Phases {
        Phases::REWRITE
            | Phases::ACCESS
            | Phases::BEFORE_PROXY
            | Phases::RESPONSE_HEADER
            | Phases::RESPONSE_BODY
            | Phases::LOG
    }
    fn rewrite(&self, _: &mut Ctx, req: &mut request::Parts) -> Flow {
        self.note("rewrite");
        req.headers.insert("x-rewritten", self.name.parse().unwrap());
        if self.deny_in == Some(Phases::REWRITE) {
            return Flow::Respond(message(StatusCode::UNAUTHORIZED, "no"));
        }
        Flow::Continue
    }
    fn access(&self, _: &mut Ctx, _: &mut request::Parts) -> Flow {
        self.note("access");
        if self.wait {
            let name = self.name;
            return Flow::Wait(Box::pin(async move {
                tokio::task::yield_now().await;
                Box::new(move |_: &mut Ctx, req: &mut request::Parts| {
                    req.headers.insert("x-waited", name.parse().unwrap());
                    Flow::Continue
                }) as Resume
            }));
        }
        if self.deny_in == Some(Phases::ACCESS) {
            return Flow::Respond(message(StatusCode::FORBIDDEN, "no"));
        }
        Flow::Continue
    }
    fn before_proxy(&self, _: &mut Ctx, _: &mut request::Parts) {
        self.note("before_proxy");
    }
    fn response_header(&self, _: &mut Ctx, resp: &mut response::Parts) {
        self.note("response_header");
        resp.headers.append("x-plugin", self.name.parse().unwrap());
    }
    fn response_body(&self, _: &Ctx, _: &mut response::Parts) -> Option<Box<dyn BodyFilter>> {
        (self.name == "upper").then(|| Box::new(Upper) as Box<dyn BodyFilter>)
    }
    fn log(&self, ctx: &Ctx) {
        self.note(&format!("log {}", ctx.status.map_or(0, |s| s.as_u16())));
    }
}

fn slot(name: &'static str, priority: i32, seen: &Seen) -> Slot {
    slot_with(name, priority, seen, |_| {})
}

fn slot_with(name: &'static str, priority: i32, seen: &Seen, f: impl FnOnce(&mut Recorder)) -> Slot {
    let mut r = Recorder { name, deny_in: None, seen: seen.clone(), wait: false };
    f(&mut r);
    let plugin: Arc<dyn Plugin> = Arc::new(r);
    Slot {
        name,
        priority,
        phases: plugin.phases(),
        filter: None,
        disabled: false,
        auth: false,
        prefer_route: false,
        plugin,
    }
}

fn ctx(consumers: Consumers) -> Ctx {
    let (parts, ()) = Request::new(()).into_parts();
    Ctx::new(None, "127.0.0.1:1".parse().unwrap(), &parts, Arc::new(consumers))
}

fn parts(uri: &str) -> request::Parts {
    Request::get(uri).body(()).unwrap().into_parts().0
}

fn seen(s: &Seen) -> Vec<String> {
    std::mem::take(&mut *s.lock().unwrap())
}

#[tokio::test]
async fn runs_phases_in_apisix_order_global_rules_first() {
    let log = Seen::default();
    let global = Chain::new([slot("g", 1, &log)]);
    let chain = Chain::new([slot("low", 1, &log), slot("high", 10, &log)]);
    let mut s = Session::new(ctx(Consumers::default()), global, chain);
    let mut req = parts("/");
    assert!(s.request(&mut req).await.is_none());
    s.before_proxy(&mut req);
    let (mut head, ()) = Response::new(()).into_parts();
    s.response_header(&mut head);
    assert_eq!(head.headers.get_all("x-plugin").iter().collect::<Vec<_>>(), ["g", "high", "low"]);
    drop(s);
    assert_eq!(
        seen(&log),
        [
            "g rewrite",
            "high rewrite",
            "low rewrite",
            "g access",
            "high access",
            "low access",
            "g before_proxy",
            "high before_proxy",
            "low before_proxy",
            "g response_header",
            "high response_header",
            "low response_header",
            "g log 200",
            "high log 200",
            "low log 200",
        ]
    );
}

#[tokio::test]
async fn an_answer_ends_the_request_phases_but_not_the_response_phases() {
    let log = Seen::default();
    let chain = Chain::new([slot_with("deny", 5, &log, |r| r.deny_in = Some(Phases::ACCESS)), slot("after", 1, &log)]);
    let mut s = Session::new(ctx(Consumers::default()), Chain::default(), chain);
    let reply = s.request(&mut parts("/")).await.expect("denied");
    let reply = s.reply(reply);
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert_eq!(reply.headers().get_all("x-plugin").iter().count(), 2, "both see the answer's head");
    drop(s);
    let log = seen(&log);
    assert!(log.contains(&"after rewrite".to_string()) && !log.contains(&"after access".to_string()), "{log:?}");
    assert!(log.contains(&"after log 403".to_string()));
}

#[tokio::test]
async fn waits_on_an_asynchronous_access_step() {
    let log = Seen::default();
    let chain = Chain::new([slot_with("slow", 1, &log, |r| r.wait = true)]);
    let mut s = Session::new(ctx(Consumers::default()), Chain::default(), chain);
    let mut req = parts("/");
    assert!(s.request(&mut req).await.is_none());
    assert_eq!(req.headers["x-waited"], "slow");
}

#[test]
fn merges_by_name_with_the_later_layer_winning_and_disabled_plugins_still_replacing() {
    let log = Seen::default();
    let service = [slot("a", 1, &log), slot("b", 2, &log)];
    let mut route_b = slot("b", 7, &log);
    route_b.disabled = true;
    let plugin_config = [slot("a", 9, &log), slot("c", 3, &log)];
    let chain = Chain::merge([&service[..], &plugin_config[..], &[route_b][..]]);
    let names: Vec<_> = chain.slots().iter().map(|s| (s.name, s.priority)).collect();
    assert_eq!(names, [("a", 9), ("c", 3)], "b is replaced by the route's disabled b");
}

#[tokio::test]
async fn a_consumer_brings_its_plugins_and_only_those_run_their_rewrite_again() {
    let log = Seen::default();
    let mut auth = slot("auth", 100, &log);
    auth.auth = true;
    // The consumer replaces `shared` and adds `own`.
    let consumer = Arc::new(Consumer {
        username: "jack".into(),
        username_header: None,
        custom_id: None,
        chain: Chain::new([slot("shared", 5, &log), slot("own", 4, &log)]),
        credentials: Vec::new(),
        jwt: None,
    });
    let attach: Arc<dyn Plugin> = Arc::new(Attach(consumer.clone()));
    auth.plugin = attach;
    auth.phases = Phases::REWRITE;
    let chain = Chain::new([auth, slot("shared", 5, &log), slot("route", 1, &log)]);
    let mut s = Session::new(ctx(Consumers::default()), Chain::default(), chain);
    assert!(s.request(&mut parts("/")).await.is_none());
    assert_eq!(s.ctx.consumer_name(), Some("jack"));
    assert_eq!(
        seen(&log),
        ["shared rewrite", "route rewrite", "own rewrite", "shared access", "own access", "route access"],
        "the consumer's own rewrite runs after the route's; the replaced one does not run rewrite again"
    );
}

#[derive(Debug)]
struct Attach(Arc<Consumer>);

impl Plugin for Attach {
    fn phases(&self) -> Phases {
        Phases::REWRITE
    }
    fn rewrite(&self, ctx: &mut Ctx, _: &mut request::Parts) -> Flow {
        ctx.consumer = Some(self.0.clone());
        Flow::Continue
    }
}

#[tokio::test]
async fn meta_filters_skip_plugins_for_every_phase_and_global_copies_defer_to_the_route() {
    let log = Seen::default();
    let mut only_v2 = slot("v2", 2, &log);
    let expr = serde_json::json!([["arg_version", "==", "v2"]]);
    only_v2.filter = Some(Arc::new(Vars::compile(expr.as_array().unwrap()).unwrap()));
    let mut global = slot("metrics", 1, &log);
    global.prefer_route = true;
    let route_metrics = slot("metrics", 1, &log);
    let chain = Chain::new([only_v2, route_metrics]);
    let global = Chain::new([global]);

    let mut s = Session::new(ctx(Consumers::default()), global.clone(), chain.clone());
    s.request(&mut parts("/?version=v1")).await;
    drop(s);
    let log1 = seen(&log);
    assert!(!log1.iter().any(|l| l.starts_with("v2")), "{log1:?}");
    assert_eq!(log1.iter().filter(|l| l.starts_with("metrics rewrite")).count(), 1, "the global copy stands down");

    let mut s = Session::new(ctx(Consumers::default()), global, chain);
    s.request(&mut parts("/?version=v2")).await;
    drop(s);
    assert!(seen(&log).contains(&"v2 log 0".to_string()));
}

#[test]
fn body_filters_change_the_body_and_drop_its_length() {
    let log = Seen::default();
    let mut s = Session::new(ctx(Consumers::default()), Chain::default(), Chain::new([slot("upper", 1, &log)]));
    let mut reply = text_reply(StatusCode::OK, "abc");
    reply.headers_mut().insert("content-length", "3".parse().unwrap());
    reply.headers_mut().insert("etag", "\"x\"".parse().unwrap());
    let reply = s.reply(reply);
    assert_eq!(&reply.body()[..], b"ABC!");
    assert_eq!(reply.headers()["content-length"], "4");
    assert!(!reply.headers().contains_key("etag"));
    assert_eq!(s.ctx.response_bytes, 4);
}
