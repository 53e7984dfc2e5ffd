//! A real gRPC server (tonic) implementing the test service of `proto/echo.proto`: unary, client and bidirectional
//! streaming, and a call that answers after a delay (for deadlines).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server of the test service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sluice.test");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{Delay, Message};

/// A running gRPC echo server; stops when dropped.
pub struct GrpcEchoServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcEchoServer {
    /// Starts a server named `name` (its answers start with it) on a free loopback port.
    pub async fn start(name: &'static str) -> anyhow::Result<GrpcEchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            Some((listener.accept().await.map(|(stream, _)| stream), listener))
        });
        let service = EchoServer::new(Named(name));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        Ok(GrpcEchoServer { addr, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for GrpcEchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Named(&'static str);

type Replies = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Named {
    async fn unary(&self, request: Request<Message>) -> Result<Response<Message>, Status> {
        Ok(Response::new(Message { text: format!("{}: {}", self.0, request.into_inner().text) }))
    }

    type ChatStream = Replies;

    async fn chat(&self, request: Request<Streaming<Message>>) -> Result<Response<Replies>, Status> {
        let name = self.0;
        let replies = request.into_inner().map(move |m| m.map(|m| Message { text: format!("{name}: {}", m.text) }));
        Ok(Response::new(Box::pin(replies)))
    }

    async fn collect(&self, request: Request<Streaming<Message>>) -> Result<Response<Message>, Status> {
        let mut stream = request.into_inner();
        let mut texts = Vec::new();
        while let Some(message) = stream.next().await {
            texts.push(message?.text);
        }
        Ok(Response::new(Message { text: format!("{}: {}", self.0, texts.join(" ")) }))
    }

    async fn slow(&self, request: Request<Delay>) -> Result<Response<Message>, Status> {
        let millis = request.into_inner().millis;
        tokio::time::sleep(Duration::from_millis(u64::from(millis))).await;
        Ok(Response::new(Message { text: format!("{}: after {millis} ms", self.0) }))
    }
}
