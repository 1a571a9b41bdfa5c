//! The baseline for the load bench: a bare pingora passthrough proxy with no features, the same
//! pingora version and thread count as sluice. Usage: `passthrough LISTEN_PORT UPSTREAM_PORT`.

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Bare(u16);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
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
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u16>().unwrap());
    let (listen, upstream) = (args.next().unwrap(), args.next().unwrap());
    let conf = ServerConf {
        threads: 2,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora_proxy::http_proxy_service(&server.configuration, Bare(upstream));
    svc.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(svc);
    server.run_forever();
}
