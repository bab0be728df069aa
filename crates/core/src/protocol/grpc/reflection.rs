//! Server reflection (`grpc.reflection.v1` and `v1alpha`, whose messages are the same on the wire)
//! from the registered services' file descriptors (serialised `FileDescriptorProto`s, as
//! @grpc/proto-loader attaches them to method definitions). Without descriptors (hand-written
//! definitions) it still lists the service names. Failed lookups are answered with an
//! `ErrorResponse` message (NOT_FOUND) on the open stream, as the reflection protocol and the
//! grpc-go/grpc-java servers do (and as grpcio-reflection's client expects), rather than by ending
//! the call. A file is sent with the dependencies not yet sent on the same stream.

use super::health::HEALTH_SERVICE;
use super::{tower_fn, ResponseStream};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tonic::Streaming;

const V1: &str = "grpc.reflection.v1.ServerReflection";
const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Reflection over one set of registered services.
#[derive(Clone)]
pub struct Reflection {
    index: Arc<Index>,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflection")
            .field("services", &self.index.services)
            .field("files", &self.index.files.len())
            .finish()
    }
}

#[derive(Default)]
struct Index {
    /// Listed by `list_services`.
    services: Vec<String>,
    /// File name → (serialised file, kept verbatim so custom options survive; its dependencies).
    files: HashMap<String, (Bytes, Vec<String>)>,
    /// Fully qualified symbol (package.Message, package.Service.Method, …) → file name.
    symbols: HashMap<String, String>,
    /// (extended type, field number) → file name.
    extensions: HashMap<(String, i32), String>,
}

impl Reflection {
    /// Reflection over `services` (fully qualified names) with the given serialised
    /// `FileDescriptorProto`s. Files that do not parse are left out and reported in the second
    /// value; the names are still listed. The first file of a name wins.
    pub fn build(services: &BTreeSet<String>, files: &[Vec<u8>]) -> (Reflection, Option<String>) {
        let mut index = Index::default();
        let mut names: BTreeSet<&str> = services.iter().map(String::as_str).collect();
        names.extend([HEALTH_SERVICE, V1, V1ALPHA]);
        index.services = names.into_iter().map(str::to_owned).collect();
        let health = health_descriptor().file.remove(0);
        index.add(health.encode_to_vec().into(), &health);
        let mut rejected = 0;
        for raw in files {
            match FileDescriptorProto::decode(raw.as_slice()) {
                Ok(file) if file.name.is_some() => index.add(Bytes::copy_from_slice(raw), &file),
                _ => rejected += 1,
            }
        }
        let problem =
            (rejected > 0).then(|| format!("{rejected} file descriptor(s) did not parse"));
        (
            Reflection {
                index: Arc::new(index),
            },
            problem,
        )
    }

    /// Whether `path` is a reflection method.
    pub fn serves(path: &str) -> bool {
        let service = path.strip_prefix('/').and_then(|p| p.split('/').next());
        matches!(service, Some(V1 | V1ALPHA))
    }

    /// Answers a `ServerReflectionInfo` call (the caller checked [`Reflection::serves`]).
    pub async fn serve(&self, req: Request<Incoming>) -> Response<tonic::body::Body> {
        let index = self.index.clone();
        let service = tower_fn(move |request: tonic::Request<Streaming<Bytes>>| {
            let index = index.clone();
            async move {
                let replies = futures_util::stream::unfold(
                    (request.into_inner(), HashSet::new()),
                    move |(mut input, mut sent)| {
                        let index = index.clone();
                        async move {
                            let reply = match input.message().await {
                                Ok(Some(bytes)) => Ok(index.answer(&bytes, &mut sent)),
                                Ok(None) => return None,
                                Err(status) => Err(status),
                            };
                            Some((reply, (input, sent)))
                        }
                    },
                );
                Ok(tonic::Response::new(Box::pin(replies) as ResponseStream))
            }
        });
        super::grpc_service().streaming(service, req).await
    }
}

impl Index {
    fn add(&mut self, raw: Bytes, file: &FileDescriptorProto) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        self.files
            .insert(name.clone(), (raw, file.dependency.clone()));
        let package = file.package();
        let mut add = |symbol: String| {
            self.symbols.entry(symbol).or_insert_with(|| name.clone());
        };
        for message in &file.message_type {
            add_message(package, message, &mut add);
        }
        for en in &file.enum_type {
            add_enum(package, en, &mut add);
        }
        for service in &file.service {
            let service_name = qualified(package, service.name());
            for method in &service.method {
                add(qualified(&service_name, method.name()));
            }
            add(service_name);
        }
        let mut extensions = Vec::new();
        collect_extensions(&file.extension, &file.message_type, &mut extensions);
        for (extendee, number) in extensions {
            self.extensions
                .entry((extendee, number))
                .or_insert_with(|| name.clone());
        }
    }

    /// One response (a serialised `ServerReflectionResponse`) to one request.
    fn answer(&self, request: &[u8], sent: &mut HashSet<String>) -> Bytes {
        let request = ServerReflectionRequest::decode(request).unwrap_or_default();
        let response = match &request.message_request {
            Some(MessageRequest::ListServices(_)) => {
                Ok(MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: (self.services.iter())
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                }))
            }
            Some(MessageRequest::FileByFilename(name)) => self.file_with_dependencies(name, sent),
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                match self.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => self.file_with_dependencies(file, sent),
                    None => Err(format!("symbol {symbol} not found")),
                }
            }
            Some(MessageRequest::FileContainingExtension(ext)) => {
                let key = (
                    ext.containing_type.trim_start_matches('.').to_owned(),
                    ext.extension_number,
                );
                match self.extensions.get(&key) {
                    Some(file) => self.file_with_dependencies(file, sent),
                    None => Err(format!(
                        "extension {} of {} not found",
                        key.1, ext.containing_type
                    )),
                }
            }
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                let name = name.trim_start_matches('.');
                if self.symbols.contains_key(name) {
                    let mut numbers: Vec<i32> = (self.extensions.keys())
                        .filter(|(extendee, _)| extendee == name)
                        .map(|(_, n)| *n)
                        .collect();
                    numbers.sort_unstable();
                    Ok(MessageResponse::AllExtensionNumbersResponse(
                        ExtensionNumberResponse {
                            base_type_name: name.to_owned(),
                            extension_number: numbers,
                        },
                    ))
                } else {
                    Err(format!("type {name} not found"))
                }
            }
            None => Err("empty request".to_owned()),
        };
        let message_response = response.unwrap_or_else(|message| {
            let code = if request.message_request.is_none() {
                tonic::Code::InvalidArgument
            } else {
                tonic::Code::NotFound
            };
            MessageResponse::ErrorResponse(ErrorResponse {
                error_code: code as i32,
                error_message: message,
            })
        });
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
        .encode_to_vec()
        .into()
    }

    /// `name`, then its dependencies (transitively) not yet sent on this stream.
    fn file_with_dependencies(
        &self,
        name: &str,
        sent: &mut HashSet<String>,
    ) -> Result<MessageResponse, String> {
        let (raw, _) = self
            .files
            .get(name)
            .ok_or_else(|| format!("file {name} not found"))?;
        let mut out = vec![raw.to_vec()];
        sent.insert(name.to_owned());
        let mut todo = vec![name.to_owned()];
        while let Some(file) = todo.pop() {
            let Some((_, dependencies)) = self.files.get(&file) else {
                continue;
            };
            for dependency in dependencies {
                if let Some((raw, _)) = self.files.get(dependency) {
                    if sent.insert(dependency.clone()) {
                        out.push(raw.to_vec());
                        todo.push(dependency.clone());
                    }
                }
            }
        }
        Ok(MessageResponse::FileDescriptorResponse(
            FileDescriptorResponse {
                file_descriptor_proto: out,
            },
        ))
    }
}

fn qualified(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn add_message(scope: &str, message: &DescriptorProto, add: &mut impl FnMut(String)) {
    let name = qualified(scope, message.name());
    for field in &message.field {
        add(qualified(&name, field.name()));
    }
    for oneof in &message.oneof_decl {
        add(qualified(&name, oneof.name()));
    }
    for nested in &message.nested_type {
        add_message(&name, nested, add);
    }
    for en in &message.enum_type {
        add_enum(&name, en, add);
    }
    add(name);
}

fn add_enum(scope: &str, en: &EnumDescriptorProto, add: &mut impl FnMut(String)) {
    let name = qualified(scope, en.name());
    for value in &en.value {
        // Enum values are scoped like their enum's siblings (protobuf's C++ scoping rule).
        add(qualified(scope, value.name()));
    }
    add(name);
}

fn collect_extensions(
    fields: &[FieldDescriptorProto],
    messages: &[DescriptorProto],
    out: &mut Vec<(String, i32)>,
) {
    for field in fields {
        out.push((
            field.extendee().trim_start_matches('.').to_owned(),
            field.number(),
        ));
    }
    for message in messages {
        collect_extensions(&message.extension, &message.nested_type, out);
    }
}

// The reflection messages (identical in v1 and v1alpha).

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "MessageRequest", tags = "3, 4, 5, 6, 7")]
    message_request: Option<MessageRequest>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum MessageRequest {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExtensionRequest {
    #[prost(string, tag = "1")]
    containing_type: String,
    #[prost(int32, tag = "2")]
    extension_number: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionResponse {
    #[prost(string, tag = "1")]
    valid_host: String,
    #[prost(message, optional, tag = "2")]
    original_request: Option<ServerReflectionRequest>,
    #[prost(oneof = "MessageResponse", tags = "4, 5, 6, 7")]
    message_response: Option<MessageResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::enum_variant_names)] // named after the protocol's fields
enum MessageResponse {
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    #[prost(message, tag = "5")]
    AllExtensionNumbersResponse(ExtensionNumberResponse),
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    extension_number: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
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

    fn file(name: &str, package: &str, dependency: &[&str], message: &str) -> Vec<u8> {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: dependency.iter().map(|d| d.to_string()).collect(),
            message_type: vec![DescriptorProto {
                name: Some(message.into()),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn ask(r: &Reflection, request: MessageRequest, sent: &mut HashSet<String>) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let bytes = r.index.answer(&request.encode_to_vec(), sent);
        ServerReflectionResponse::decode(bytes)
            .unwrap()
            .message_response
            .unwrap()
    }

    fn names(response: MessageResponse) -> Vec<String> {
        match response {
            MessageResponse::FileDescriptorResponse(f) => f
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(b.as_slice())
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    #[test]
    fn files_come_with_dependencies_not_yet_sent() {
        let services = BTreeSet::from(["a.S".to_string()]);
        let files = [
            file("a.proto", "a", &["b.proto"], "A"),
            file("b.proto", "b", &["c.proto"], "B"),
            file("c.proto", "c", &[], "C"),
        ];
        let (r, problem) = Reflection::build(&services, &files);
        assert!(problem.is_none());
        let mut sent = HashSet::new();
        let by_symbol = ask(
            &r,
            MessageRequest::FileContainingSymbol("a.A".into()),
            &mut sent,
        );
        assert_eq!(names(by_symbol), ["a.proto", "b.proto", "c.proto"]);
        let again = ask(
            &r,
            MessageRequest::FileByFilename("b.proto".into()),
            &mut sent,
        );
        assert_eq!(names(again), ["b.proto"]);
        let health = ask(
            &r,
            MessageRequest::FileContainingSymbol("grpc.health.v1.Health.Watch".into()),
            &mut HashSet::new(),
        );
        assert_eq!(names(health), ["grpc/health/v1/health.proto"]);
    }

    #[test]
    fn lookups_that_fail_are_error_responses() {
        let services = BTreeSet::from(["hand.Written".to_string()]);
        let (r, problem) = Reflection::build(&services, &[vec![0xff, 0xff]]);
        assert!(problem.is_some());
        match ask(
            &r,
            MessageRequest::ListServices(String::new()),
            &mut HashSet::new(),
        ) {
            MessageResponse::ListServicesResponse(l) => assert_eq!(
                l.service
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
                [HEALTH_SERVICE, V1, V1ALPHA, "hand.Written"]
            ),
            other => panic!("{other:?}"),
        }
        for request in [
            MessageRequest::FileContainingSymbol("hand.Written".into()),
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::AllExtensionNumbersOfType("nope.T".into()),
        ] {
            match ask(&r, request, &mut HashSet::new()) {
                MessageResponse::ErrorResponse(e) => {
                    assert_eq!(e.error_code, tonic::Code::NotFound as i32)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(Reflection::serves(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(Reflection::serves(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!Reflection::serves("/a.B/C"));
    }
}
