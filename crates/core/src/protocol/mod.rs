//! Protocol parts plugged into the shared lifecycle. Each implements
//! [`crate::lifecycle::ConnectionHandler`] and hands requests to the [`crate::bridge::Bridge`].

pub mod grpc;
pub mod http;
pub mod ws;

pub use grpc::GrpcProtocol;
pub use http::HttpProtocol;
