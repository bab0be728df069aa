//! The standard health service `grpc.health.v1.Health`, answered natively unless the application
//! registered its own. The server (empty name) and every registered service are SERVING while the
//! server accepts connections and NOT_SERVING from the first shutdown step on. As grpc-go's and
//! grpc-js's health servers do, `Check` of an unknown service is NOT_FOUND; `Watch` sends the
//! current status and then each change (SERVICE_UNKNOWN for an unknown service until it is
//! registered), and ends with UNAVAILABLE when its connection drains so it does not hold the
//! shutdown up.

use super::{tower_fn, MethodRegistry, ResponseStream};
use crate::lifecycle::{Phase, PhaseSignal};
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Status, Streaming};

pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
pub const CHECK: &str = "/grpc.health.v1.Health/Check";
pub const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// `HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServingStatus {
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

impl ServingStatus {
    fn now(service: &str, accepting: bool, registry: &MethodRegistry) -> ServingStatus {
        if !service.is_empty() && service != HEALTH_SERVICE && !registry.load().has_service(service)
        {
            ServingStatus::ServiceUnknown
        } else if accepting {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    /// A serialised `HealthCheckResponse` (field 1, enum).
    fn message(self) -> Bytes {
        Bytes::from(vec![0x08, self as u8])
    }
}

/// Answers `Check` and `Watch` (the caller routes only those two paths here).
pub(super) async fn serve(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    registry: MethodRegistry,
    phase: PhaseSignal,
) -> Response<tonic::body::Body> {
    let watching = req.uri().path() == WATCH;
    let service = tower_fn(move |request: tonic::Request<Streaming<Bytes>>| {
        let metrics = metrics.clone();
        let registry = registry.clone();
        let phase = phase.clone();
        async move {
            let mut input = request.into_inner();
            let message = input.message().await?.unwrap_or_default();
            let service = decode_health_request(&message)
                .ok_or_else(|| Status::invalid_argument("malformed HealthCheckRequest"))?;
            let reply: ResponseStream = if watching {
                Box::pin(watch_status(service, &metrics, registry, phase))
            } else {
                match ServingStatus::now(&service, metrics.accepting(), &registry) {
                    ServingStatus::ServiceUnknown => {
                        return Err(Status::not_found(format!("unknown service {service}")))
                    }
                    status => Box::pin(futures_util::stream::iter([Ok(status.message())])),
                }
            };
            Ok(tonic::Response::new(reply))
        }
    });
    super::grpc_service().streaming(service, req).await
}

struct Watching {
    service: String,
    registry: MethodRegistry,
    accepting: watch::Receiver<bool>,
    registry_changed: watch::Receiver<()>,
    phase: PhaseSignal,
    last_sent: Option<ServingStatus>,
    done: bool,
}

/// The current status, then one message per change, until the connection drains.
fn watch_status(
    service: String,
    metrics: &Metrics,
    registry: MethodRegistry,
    phase: PhaseSignal,
) -> impl futures_util::Stream<Item = Result<Bytes, Status>> + Send + 'static {
    let state = Watching {
        service,
        registry_changed: registry.subscribe(),
        registry,
        accepting: metrics.watch_accepting(),
        phase,
        last_sent: None,
        done: false,
    };
    futures_util::stream::unfold(state, |mut w| async move {
        if w.done {
            return None;
        }
        loop {
            w.registry_changed.borrow_and_update();
            let accepting = *w.accepting.borrow_and_update();
            let status = ServingStatus::now(&w.service, accepting, &w.registry);
            if w.last_sent != Some(status) {
                w.last_sent = Some(status);
                return Some((Ok(status.message()), w));
            }
            // Shutdown closes the listener (NOT_SERVING) just before connections drain; both may
            // be seen at once, so the change of status is sent above before the stream ends.
            if w.phase.current() >= Phase::Retiring {
                w.done = true;
                return Some((Err(Status::unavailable("server is shutting down")), w));
            }
            tokio::select! {
                changed = w.accepting.changed() => changed.ok()?,
                changed = w.registry_changed.changed() => changed.ok()?,
                _ = w.phase.reached(Phase::Retiring) => {}
            }
        }
    })
}

/// The `service` field (1, string) of a HealthCheckRequest.
fn decode_health_request(bytes: &[u8]) -> Option<String> {
    #[derive(prost::Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }
    <HealthCheckRequest as prost::Message>::decode(bytes)
        .ok()
        .map(|r| r.service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::grpc::{GrpcRegistry, RequestShape};

    #[test]
    fn health_requests_decode() {
        assert_eq!(decode_health_request(&[]), Some(String::new()));
        assert_eq!(
            decode_health_request(&[0x0a, 0x03, b'a', b'.', b'B']),
            Some("a.B".into())
        );
        assert_eq!(decode_health_request(&[0x0a, 0x09]), None);
    }

    #[test]
    fn status_follows_registration_and_accepting() {
        let registry = MethodRegistry::default();
        assert_eq!(
            ServingStatus::now("a.B", true, &registry),
            ServingStatus::ServiceUnknown
        );
        registry.store(GrpcRegistry::new([(
            "/a.B/C".to_string(),
            RequestShape::Single,
        )]));
        assert_eq!(
            ServingStatus::now("a.B", true, &registry),
            ServingStatus::Serving
        );
        assert_eq!(
            ServingStatus::now("a", true, &registry),
            ServingStatus::ServiceUnknown
        );
        assert_eq!(
            ServingStatus::now("", false, &registry),
            ServingStatus::NotServing
        );
        assert_eq!(
            ServingStatus::now(HEALTH_SERVICE, true, &registry),
            ServingStatus::Serving
        );
    }
}
