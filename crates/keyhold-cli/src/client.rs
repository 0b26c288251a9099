//! The CLI as a client of `keyhold serve`: JSON over HTTP or HTTPS (system roots, plus a
//! private CA with `--ca-cert`), the bearer token from `--token` / `KEYHOLD_TOKEN`, and the
//! server's `{"error":{"code","message"}}` turned into an error that names both.

use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::flags::ClientArgs;

/// A connection to a keyhold server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client for the server `args` names.
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let base = args
            .url
            .clone()
            .ok_or_else(|| anyhow!("no server given: pass --url or set KEYHOLD_URL (e.g. http://127.0.0.1:8700)"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &args.ca_cert {
            for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
                roots.add(cert.with_context(|| format!("reading {}", path.display()))?)?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer of a 2xx.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call_status(method, path, body).await?;
        if (200..300).contains(&status) { Ok(value) } else { bail!("{}", server_error(status, &value)) }
    }

    /// As [`Client::call`], returning the status with the answer whatever it is.
    pub async fn call_status(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let resp = self
            .http
            .request(req.body(Full::new(payload))?)
            .await
            .with_context(|| format!("calling {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, value))
    }
}

/// The server's error in one line: `code (HTTP status): message`.
pub fn server_error(status: u16, v: &Value) -> String {
    match (v.pointer("/error/code").and_then(Value::as_str), v.pointer("/error/message").and_then(Value::as_str)) {
        (Some(code), Some(message)) => format!("{code} (HTTP {status}): {message}"),
        _ => format!("HTTP {status}: {v}"),
    }
}
