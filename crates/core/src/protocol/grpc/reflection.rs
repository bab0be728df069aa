//! Server reflection (`grpc.reflection.v1` and `v1alpha`), answered by tonic-reflection from the
//! registered services' file descriptors (serialised `FileDescriptorProto`s, as @grpc/proto-loader
//! attaches them to method definitions). Without descriptors (hand-written definitions) it still
//! lists the service names; file and symbol requests are then NOT_FOUND.

use super::health::HEALTH_SERVICE;
use http::{Request, Response};
use hyper::body::Incoming;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::codegen::Service;
use tonic_reflection::server::Builder;

const V1: &str = "grpc.reflection.v1.ServerReflection";
const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

type ResponseFuture = Pin<Box<dyn Future<Output = Response<tonic::body::Body>> + Send>>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> ResponseFuture + Send + Sync>;

/// The two reflection services for one set of registered services.
#[derive(Clone)]
pub struct Reflection {
    v1: Handler,
    v1alpha: Handler,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reflection")
    }
}

impl Reflection {
    /// Reflection over `services` (fully qualified names) with the given serialised
    /// `FileDescriptorProto`s. Descriptors that do not parse are dropped and reported in the
    /// second value; the names are still listed.
    pub fn build(services: &BTreeSet<String>, files: &[Vec<u8>]) -> (Reflection, Option<String>) {
        let set = encode_file_descriptor_set(files);
        let configure = |with_files: bool| {
            let mut builder =
                Builder::configure().register_file_descriptor_set(health_descriptor());
            if with_files {
                builder = builder.register_encoded_file_descriptor_set(&set);
            }
            let mut names: BTreeSet<&str> = services.iter().map(String::as_str).collect();
            names.extend([HEALTH_SERVICE, V1, V1ALPHA]);
            for name in names {
                builder = builder.with_service_name(name);
            }
            builder
        };
        let built = configure(true)
            .build_v1()
            .and_then(|v1| Ok((v1, configure(true).build_v1alpha()?)));
        let ((v1, v1alpha), problem) = match built {
            Ok(pair) => (pair, None),
            Err(e) => {
                let fallback = configure(false)
                    .build_v1()
                    .and_then(|v1| Ok((v1, configure(false).build_v1alpha()?)))
                    .expect("the built-in descriptors are valid");
                (fallback, Some(format!("file descriptors rejected: {e}")))
            }
        };
        (
            Reflection {
                v1: handler(v1),
                v1alpha: handler(v1alpha),
            },
            problem,
        )
    }

    /// The service for a request path, when it is a reflection method.
    pub fn handler_for(&self, path: &str) -> Option<&Handler> {
        let service = path.strip_prefix('/')?.split('/').next()?;
        match service {
            V1 => Some(&self.v1),
            V1ALPHA => Some(&self.v1alpha),
            _ => None,
        }
    }
}

fn handler<S>(service: S) -> Handler
where
    S: Service<Request<Incoming>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Arc::new(move |req| {
        let mut service = service.clone();
        Box::pin(async move {
            match service.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    })
}

/// A `FileDescriptorSet` (field 1, repeated) around already serialised files, kept verbatim so
/// custom options survive.
fn encode_file_descriptor_set(files: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(files.iter().map(|f| f.len() + 6).sum());
    for file in files {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(file.len() as u64, &mut out);
        out.extend_from_slice(file);
    }
    out
}

/// `grpc/health/v1/health.proto` (Check and Watch), for the natively served health service.
fn health_descriptor() -> FileDescriptorSet {
    let field = |name: &str, kind: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(1),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let status_values = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
        .iter()
        .zip(0..)
        .map(|(name, number)| EnumValueDescriptorProto {
            name: Some((*name).into()),
            number: Some(number),
            ..Default::default()
        })
        .collect();
    let method = |name: &str, server_streaming: bool| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".grpc.health.v1.HealthCheckRequest".into()),
        output_type: Some(".grpc.health.v1.HealthCheckResponse".into()),
        server_streaming: Some(server_streaming),
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("grpc/health/v1/health.proto".into()),
            package: Some("grpc.health.v1".into()),
            message_type: vec![
                DescriptorProto {
                    name: Some("HealthCheckRequest".into()),
                    field: vec![field("service", Type::String, None)],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("HealthCheckResponse".into()),
                    field: vec![field(
                        "status",
                        Type::Enum,
                        Some(".grpc.health.v1.HealthCheckResponse.ServingStatus"),
                    )],
                    enum_type: vec![EnumDescriptorProto {
                        name: Some("ServingStatus".into()),
                        value: status_values,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("Health".into()),
                method: vec![method("Check", false), method("Watch", true)],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_sets_keep_files_verbatim() {
        let health = health_descriptor().file.remove(0).encode_to_vec();
        let set = encode_file_descriptor_set(&[health.clone(), vec![0x0a, 0x01, b'x']]);
        let decoded = FileDescriptorSet::decode(set.as_slice()).unwrap();
        assert_eq!(decoded.file.len(), 2);
        assert_eq!(decoded.file[0].encode_to_vec(), health);
        assert_eq!(decoded.file[1].name.as_deref(), Some("x"));
    }

    #[test]
    fn bad_descriptors_fall_back_to_names() {
        let services = BTreeSet::from(["a.B".to_string()]);
        let (_, problem) = Reflection::build(&services, &[vec![0xff, 0xff]]);
        assert!(problem.is_some());
        let (r, problem) = Reflection::build(&services, &[]);
        assert!(problem.is_none());
        assert!(r
            .handler_for("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
            .is_some());
        assert!(r
            .handler_for("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            .is_some());
        assert!(r.handler_for("/a.B/C").is_none());
    }
}
