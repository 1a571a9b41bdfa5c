//! The baseline for the load bench: a bare pingora passthrough proxy with no features, the same
//! pingora version and thread count as sluice. Usage: `passthrough LISTEN_PORT UPSTREAM_PORT
//! [buffer]`; with `buffer` it reads the whole request body in `request_filter` first and
//! forwards it from pingora's retry buffer, as sluice does for a body that fits it.

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Bare(u16, bool);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn request_filter(&self, s: &mut Session, _c: &mut ()) -> pingora_error::Result<bool> {
        if self.1 {
            s.downstream_session.enable_retry_buffering();
            while s.read_request_body().await?.is_some() {}
        }
        Ok(false)
    }
    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            ("127.0.0.1", self.0),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream): (u16, u16) = (args[0].parse().unwrap(), args[1].parse().unwrap());
    let buffer = args.get(2).is_some_and(|a| a == "buffer");
    let conf = ServerConf {
        threads: 2,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Bare(upstream, buffer));
    svc.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(svc);
    server.run_forever();
}
