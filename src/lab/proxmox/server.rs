//! HTTPS transport of the lab PVE: a self-signed certificate (rcgen), rustls on
//! 127.0.0.1:0, and one axum fallback handler that hands every request to `api`.
//! Error messages go into the HTTP reason phrase, as pveproxy does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::LabProxmoxConfig;
use super::LabPveState;
use super::api::{Lab, Request, cert_der};
use crate::lab::Fabric;

pub(super) async fn serve(
    fabric: Fabric,
    config: LabProxmoxConfig,
    state: LabPveState,
) -> anyhow::Result<(SocketAddr, String, Arc<Lab>, tokio::task::JoinHandle<()>)> {
    let der =
        cert_der(&state.cert_pem).ok_or_else(|| anyhow::anyhow!("lab: bad certificate PEM"))?;
    let fingerprint = crate::tls::fingerprint(&der);
    let key = PrivateKeyDer::from_pem_slice(state.key_pem.as_bytes())?;
    let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der)], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let fabric_events = fabric.events.clone();
    let lab = Arc::new(Lab::new(fabric, config, state));
    *lab.listen.lock().expect("lab listen") = Some(addr);
    let app = axum::Router::new().fallback(handle).with_state(lab.clone());
    let mut events = fabric_events.subscribe();
    let guests = lab.clone();
    let server = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = events.recv() => {
                    guests.catch_up();
                    continue;
                }
            };
            let Ok((tcp, _)) = accepted else {
                continue;
            };
            // Small replies must not wait for the client's delayed ACK (~40 ms, Nagle),
            // a lab artefact that would swamp the request latencies it simulates.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok((addr, fingerprint, lab, server))
}

async fn handle(
    State(lab): State<Arc<Lab>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let decode = |s: &str| -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    };
    // Body parameters, then query parameters (the query wins, as in pve-http-server).
    let mut params = Vec::new();
    let form =
        header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(decode(&String::from_utf8_lossy(&body)));
    }
    let boundary = header("content-type").and_then(|c| {
        c.strip_prefix("multipart/form-data")
            .and_then(|rest| rest.split("boundary=").nth(1))
            .map(|b| b.trim_matches('"').to_owned())
    });
    let mut upload = None;
    if let Some(b) = &boundary {
        let (fields, file) = multipart(&body, b);
        params.extend(fields);
        upload = file;
    }
    if let Some(q) = uri.query() {
        for (k, v) in decode(q) {
            params.retain(|(pk, _)| pk != &k);
            params.push((k, v));
        }
    }
    let path = percent_decode(uri.path());
    // The fake Image Factory serves the ISO as bytes, not a JSON envelope.
    if method == Method::GET && path.starts_with("/image/") {
        return match lab.factory_image(&path) {
            Some(bytes) => Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/x-iso9660-image")
                .body(Body::from(bytes))
                .expect("static response parts"),
            None => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Body::empty())
                .expect("static response parts"),
        };
    }
    let req = Request {
        method: method.to_string(),
        path,
        params,
        authorization: header("authorization"),
        cookie: header("cookie"),
        csrf: header("csrfpreventiontoken"),
        multipart: boundary.is_some(),
        upload,
        body: if form || boundary.is_some() {
            Vec::new()
        } else {
            body.to_vec()
        },
    };
    let reply = lab.handle(req).await;
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json;charset=UTF-8")
        .header("server", "pve-api-daemon/3.0")
        .body(if reply.body.is_null() {
            Body::empty()
        } else {
            Body::from(reply.body.to_string())
        })
        .expect("static response parts");
    if let Some(r) = reply.reason {
        let line = r.replace(['\r', '\n'], " ");
        if let Ok(rp) = hyper::ext::ReasonPhrase::try_from(line.into_bytes()) {
            resp.extensions_mut().insert(rp);
        }
    }
    resp
}

fn percent_decode(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&p[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `multipart/form-data` body as pve-http-server reads it (`AnyEvent.pm`
/// 1280-1375): parts in order, form fields until the file part (`name="filename"`
/// with a `filename="…"` attribute), which must come last; anything after it is
/// swallowed, as the upstream parser consumes the buffer from the front.
/// Returns the fields and `(file name, bytes)`.
#[allow(clippy::type_complexity)]
fn multipart(body: &[u8], boundary: &str) -> (Vec<(String, String)>, Option<(String, Vec<u8>)>) {
    let delim = format!("--{boundary}");
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut fields = Vec::new();
    let mut pos = match find(body, 0, delim.as_bytes()) {
        Some(p) => p + delim.len(),
        None => return (fields, None),
    };
    loop {
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            break; // `--` ends the body
        }
        let head_start = pos + 2;
        let Some(head_end) = find(body, head_start, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&body[head_start..head_end]).into_owned();
        let data_start = head_end + 4;
        let end_marker = format!("\r\n{delim}");
        let Some(data_end) = find(body, data_start, end_marker.as_bytes()) else {
            break;
        };
        let data = &body[data_start..data_end];
        let attr = |k: &str| {
            head.split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .and_then(|v| v.split('"').next())
                .map(str::to_owned)
        };
        let name = attr("name").unwrap_or_default();
        if let Some(file) = attr("filename").filter(|_| name == "filename") {
            return (fields, Some((file, data.to_vec())));
        }
        fields.push((name, String::from_utf8_lossy(data).into_owned()));
        pos = data_end + end_marker.len();
    }
    (fields, None)
}

#[cfg(test)]
mod tests {
    use super::multipart;
    use crate::proxmox::client::multipart as client_multipart;

    #[test]
    fn the_clients_upload_body_parses_field_by_field_and_the_file_is_intact() {
        // Bytes that look like a boundary line must not end the part early.
        let file: Vec<u8> = b"\r\n--not-the-boundary\r\n\x00\xff".repeat(50);
        let body = client_multipart(
            "b0undary",
            &[
                ("content", "iso"),
                ("checksum-algorithm", "sha256"),
                ("checksum", "ab"),
            ],
            "x.iso",
            &file,
        );
        let (fields, upload) = multipart(&body, "b0undary");
        assert_eq!(
            fields,
            [
                ("content".to_owned(), "iso".to_owned()),
                ("checksum-algorithm".to_owned(), "sha256".to_owned()),
                ("checksum".to_owned(), "ab".to_owned()),
            ]
        );
        assert_eq!(upload, Some(("x.iso".to_owned(), file)));
    }

    #[test]
    fn fields_after_the_file_part_are_swallowed() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"a.iso\"\r\n\r\nDATA\r\n--b\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n--b--\r\n";
        let (fields, upload) = multipart(body, "b");
        assert!(fields.is_empty(), "{fields:?}");
        assert_eq!(upload.unwrap().1, b"DATA");
    }
}
