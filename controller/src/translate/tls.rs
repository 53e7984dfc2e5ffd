//! One Ingress's `spec.tls` → ssl objects (one per entry), and the hosts whose plain-HTTP requests are redirected
//! to HTTPS.
//!
//! As in ingress-nginx:
//! - an entry's `hosts` are the names its certificate is served for; an entry without `hosts` serves the rules'
//!   hosts that its certificate names (its subject alternative names);
//! - an entry without `secretName` leaves its hosts to the data plane's default certificate (`--default-ssl`);
//! - the hosts served with a certificate of this Ingress redirect plain HTTP to HTTPS (301, or 308 for methods
//!   other than GET and HEAD), unless the Ingress says `sluice.dev/ssl-redirect: "false"`;
//! - when two Ingresses name the same host with different Secrets, the older one's certificate is served and the
//!   newer one is told so.
//!
//! Client certificates (downstream mutual TLS) are asked for when the Ingress names a Secret with the CA bundle
//! (`sluice.dev/client-ca-secret`, key `ca.crt`, same namespace), optionally with `sluice.dev/client-verify-depth`.
//! Such an Ingress's hosts always redirect plain HTTP (a client without a certificate must not be served over
//! plain HTTP either), and when its CA cannot be read, or one of its tls entries cannot be served with it (no
//! Secret, a broken one, a host another Ingress holds), every route of the Ingress answers 503 instead of serving
//! without the verification it asked for.
//! The ssl objects are checked with the model's own validation (PEM blocks, each key belongs to its certificate),
//! the one the data plane runs, so a broken Secret is reported here and never written.

use std::collections::HashMap;

use k8s_openapi::api::networking::v1::Ingress;
use rustls_pki_types::{CertificateDer, ServerName};
use sluice_model::ssl::{ClientVerification, certificates, valid_sni};
use sluice_model::{Ssl, labels};

use super::hosts::Host;
use super::secrets::Secrets;
use super::{Problem, Reason, ids};
use crate::resources::{name, namespace};

/// The annotation that switches the redirect of plain HTTP to HTTPS off (`"false"`).
pub const SSL_REDIRECT_ANNOTATION: &str = "sluice.dev/ssl-redirect";
/// The annotation naming a Secret (same namespace, key `ca.crt`) whose CAs client certificates must chain to.
pub const CLIENT_CA_ANNOTATION: &str = "sluice.dev/client-ca-secret";
/// The annotation setting how many intermediate certificates a client chain may have (0 to 9, default 1).
pub const CLIENT_DEPTH_ANNOTATION: &str = "sluice.dev/client-verify-depth";

/// Which Secret (`namespace/name`) and Ingress serve each host name, across Ingresses, oldest Ingress first.
#[derive(Default)]
pub(super) struct Claims {
    by_host: HashMap<String, (String, String)>,
}

/// What one Ingress's `spec.tls` gives.
#[derive(Default)]
pub(super) struct Output {
    /// The ssl objects to write.
    pub ssls: Vec<Ssl>,
    /// The names (exact or `*.` wildcards, lowercase) whose plain-HTTP requests are redirected to HTTPS.
    pub redirect: Vec<String>,
    /// Client verification was asked for and cannot be set up: the Ingress's routes must not serve.
    pub unserved: bool,
    /// What could not be used.
    pub problems: Vec<Problem>,
}

impl Output {
    /// Whether a rule for `host` (or the default backend, `None`) is redirected to HTTPS.
    pub fn redirects(&self, host: Option<&Host>) -> bool {
        let Some(host) = host else { return false };
        self.redirect.iter().any(|name| match (name.strip_prefix("*."), host) {
            (None, Host::Exact(h)) => name == h,
            (Some(suffix), Host::Exact(h)) => h.split_once('.').is_some_and(|(_, rest)| rest == suffix),
            (Some(suffix), Host::Wildcard(s)) => suffix == s,
            (None, Host::Wildcard(_)) => false,
        })
    }
}

/// Translates `ing`'s `spec.tls`; `rule_hosts` are its rules' valid hosts.
pub(super) fn translate(ing: &Ingress, rule_hosts: &[Host], secrets: &Secrets, claims: &mut Claims) -> Output {
    let (ns, ing_name) = (namespace(&ing.metadata), name(&ing.metadata));
    let mut out = Output::default();
    let Some(entries) = ing.spec.as_ref().and_then(|s| s.tls.as_ref()) else { return out };
    let annotation = |key: &str| ing.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str);
    let mut redirect = annotation(SSL_REDIRECT_ANNOTATION) != Some("false");
    let client =
        match client_verification(ns, annotation(CLIENT_CA_ANNOTATION), annotation(CLIENT_DEPTH_ANNOTATION), secrets) {
            Ok(client) => client,
            Err(problem) => {
                // Without the CA, serving anything would let in clients the Ingress wants verified.
                out.problems.push(problem);
                out.unserved = true;
                return out;
            }
        };
    redirect |= client.is_some();
    let owner = format!("Ingress {ns}/{ing_name}");
    let (problems_before, mut default_certificate) = (out.problems.len(), false);
    for (i, entry) in entries.iter().enumerate() {
        let what = format!("tls[{i}]");
        let Some(secret) = entry.secret_name.as_deref() else {
            default_certificate = true;
            continue;
        };
        let pair = secrets
            .key(ns, secret, "tls.crt", &what)
            .and_then(|cert| Ok((cert, secrets.key(ns, secret, "tls.key", &what)?)));
        let (cert, key) = match pair {
            Ok(pair) => pair,
            Err(p) => {
                out.problems.push(p);
                continue;
            }
        };
        let names = match entry.hosts.as_deref() {
            Some(hosts) if !hosts.is_empty() => listed_names(hosts, &what, &mut out.problems),
            _ => named_by_certificate(&cert, rule_hosts),
        };
        let secret_ref = format!("{ns}/{secret}");
        let mut names = names;
        names.sort();
        names.dedup();
        if names.is_empty() {
            if entry.hosts.as_deref().is_none_or(<[String]>::is_empty) {
                let message =
                    format!("{what}: no hosts listed, and Secret {secret_ref} names none of the rules' hosts");
                out.problems.push(Problem { reason: Reason::InvalidSpec, message });
            }
            continue;
        }
        let mut ssl = Ssl {
            id: Some(ids::make("ing", &[ns, ing_name, "tls", &i.to_string()])),
            cert: Some(cert),
            key: Some(key),
            snis: Some(names),
            client: client.clone(),
            labels: labels::owner("Ingress", ns, ing_name),
            ..Ssl::default()
        };
        // Checked before any host is claimed, so that a broken Secret does not keep a host from a newer Ingress.
        if let Err(e) = ssl.validate() {
            let message = format!("{what}: Secret {secret_ref}: {e}");
            out.problems.push(Problem { reason: Reason::InvalidSpec, message });
            continue;
        }
        let mut snis = Vec::new();
        for n in ssl.snis.take().unwrap_or_default() {
            match claims.by_host.get(&n) {
                Some((other_secret, _)) if *other_secret == secret_ref => snis.push(n),
                Some((_, other)) => out.problems.push(Problem {
                    reason: Reason::HostConflict,
                    message: format!("{what}: host {n:?} is served with the certificate of the older {other}"),
                }),
                None => {
                    claims.by_host.insert(n.clone(), (secret_ref.clone(), owner.clone()));
                    snis.push(n);
                }
            }
        }
        if snis.is_empty() {
            continue;
        }
        ssl.snis = Some(snis.clone());
        if redirect {
            out.redirect.extend(snis);
        }
        out.ssls.push(ssl);
    }
    if client.is_some() && (default_certificate || out.problems.len() > problems_before) {
        // Those hosts would be served by another certificate (the default, or an older Ingress's), which asks for
        // no client certificate: the Ingress is not served at all rather than served to unverified clients.
        let message = format!(
            "annotation {CLIENT_CA_ANNOTATION}: not every tls entry can be served with client certificates; \
             every path answers 503 until that is fixed"
        );
        out.problems.push(Problem { reason: Reason::InvalidSpec, message });
        out.unserved = true;
    }
    out
}

/// The client verification an Ingress asks for, from its annotations.
fn client_verification(
    ns: &str,
    ca_secret: Option<&str>,
    depth: Option<&str>,
    secrets: &Secrets,
) -> Result<Option<ClientVerification>, Problem> {
    let invalid = |message: String| Problem { reason: Reason::InvalidSpec, message };
    let Some(secret) = ca_secret else {
        return match depth {
            Some(_) => Err(invalid(format!("annotation {CLIENT_DEPTH_ANNOTATION} needs {CLIENT_CA_ANNOTATION}"))),
            None => Ok(None),
        };
    };
    let ca = secrets.key(ns, secret, "ca.crt", &format!("annotation {CLIENT_CA_ANNOTATION}"))?;
    if certificates(&ca).is_none() {
        return Err(invalid(format!(
            "annotation {CLIENT_CA_ANNOTATION}: Secret {ns}/{secret} key ca.crt holds no PEM certificate"
        )));
    }
    let depth = match depth.map(str::parse::<u32>) {
        None => 1,
        Some(Ok(d)) if d <= 9 => d,
        Some(_) => return Err(invalid(format!("annotation {CLIENT_DEPTH_ANNOTATION} must be a number from 0 to 9"))),
    };
    Ok(Some(ClientVerification { ca, depth, skip_mtls_uri_regex: None }))
}

/// An entry's `hosts`, lowercased; names that cannot be server names are reported and left out.
fn listed_names(hosts: &[String], what: &str, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut names = Vec::new();
    for host in hosts {
        let name = host.to_ascii_lowercase();
        if valid_sni(&name) {
            names.push(name);
        } else {
            let message = format!("{what}: host {host:?} must be a DNS name, optionally starting with '*.'");
            problems.push(Problem { reason: Reason::InvalidHost, message });
        }
    }
    names
}

/// The rules' hosts that the leaf certificate of `cert` is valid for (ingress-nginx's choice for an entry without
/// `hosts`); none when the certificate cannot be read, which validation then reports.
fn named_by_certificate(cert: &str, rule_hosts: &[Host]) -> Vec<String> {
    let Some(leaf) = certificates(cert).and_then(|chain| chain.into_iter().next()) else { return Vec::new() };
    let leaf: CertificateDer<'_> = leaf;
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&leaf) else { return Vec::new() };
    rule_hosts
        .iter()
        .filter_map(|h| match h {
            Host::Exact(name) => {
                let server = ServerName::try_from(name.as_str()).ok()?;
                end_entity.verify_is_valid_for_subject_name(&server).is_ok().then(|| name.clone())
            }
            // A wildcard rule is served only by a certificate for the same wildcard: that is the one kind of
            // certificate valid for a made-up label under the suffix.
            Host::Wildcard(suffix) => {
                let probe = format!("sluice-wildcard-probe.{suffix}");
                let server = ServerName::try_from(probe.as_str()).ok()?;
                end_entity.verify_is_valid_for_subject_name(&server).is_ok().then(|| format!("*.{suffix}"))
            }
        })
        .collect()
}
