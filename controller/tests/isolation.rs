//! One invalid ApiRoute among a thousand valid ones: the thousand are written to a real etcd in the same sync,
//! the invalid one reports `Accepted=False` with its reason, and nothing else is held back.

use serde_json::json;
use sluice_controller::conditions;
use sluice_controller::resources::Resources;
use sluice_controller::sink::EtcdSink;
use sluice_controller::translate::{Options, translate};
use sluice_model::Keys;
use sluice_testkit::Etcd;

fn api_route(i: usize, regex: &str) -> sluice_crds::ApiRoute {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": format!("r{i}"), "namespace": "load", "generation": 1},
        "spec": {"ingressClassName": "sluice", "http": [{"name": "main",
            "match": {"paths": [format!("/r{i}/*")],
                      "exprs": [{"subject": {"scope": "Header", "name": "x-v"}, "op": "RegexMatch", "value": regex}]},
            "backends": [{"serviceName": "web", "servicePort": 80}]}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn one_invalid_among_a_thousand() {
    let mut resources = Resources::default();
    resources.ingress_classes.push(
        serde_json::from_value(
            json!({"metadata": {"name": "sluice"}, "spec": {"controller": "sluice.dev/ingress-controller"}}),
        )
        .unwrap(),
    );
    resources.services.push(
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "load"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .unwrap(),
    );
    resources.api_routes = (0..1000).map(|i| api_route(i, "^v[0-9]+$")).collect();
    resources.api_routes.insert(500, api_route(1000, "(unclosed"));

    let out = translate(&resources, &Options::default());
    assert_eq!(out.config.routes.len(), 1000);
    let etcd = Etcd::start().await.unwrap();
    let mut sink = EtcdSink::new(etcd.client().await.unwrap(), Keys::default());
    let applied = sink.apply(&out.config.to_kv(&Keys::default())).await.unwrap();
    assert_eq!(applied.puts, 1001, "a thousand routes and their upstream in one sync");

    let mut client = etcd.client().await.unwrap();
    let listed =
        client.get("/sluice/routes/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await;
    assert_eq!(listed.unwrap().count(), 1000);

    for status in &out.statuses {
        let conds = conditions::conditions(status, Ok(()), &[]);
        if status.object.name == "r1000" {
            assert_eq!((conds[0].status.as_str(), conds[0].reason.as_str()), ("False", "InvalidSpec"));
            assert!(conds[0].message.contains("invalid regex"), "{}", conds[0].message);
        } else {
            assert_eq!(conds[0].status, "True", "{}: {}", status.object, conds[0].message);
            assert_eq!(conds[1].status, "True");
        }
    }
}
