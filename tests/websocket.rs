//! WebSocket through the proxy: the handshake carries the bearer, then frames flow both
//! ways over the upgraded connection.

mod support;

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use support::local_listener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server that records each handshake's `Authorization`.
#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
async fn websocket_echo() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let callback = |request: &Request, response: Response| {
                    let bearer = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    record.lock().unwrap().push(bearer.unwrap_or_default());
                    Ok(response)
                };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        socket.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_flow_through_with_the_bearer_on_the_handshake() {
    let issued = support::issuer().await;
    let (upstream, seen) = websocket_echo().await;
    let proxy = support::proxy(&issued, &upstream, &[]).await;

    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("the handshake passes the proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through the proxy"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_data().as_ref(),
        [0u8, 1, 2, 255]
    );
    socket.close(None).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let token = seen[0]
        .strip_prefix("Bearer ")
        .expect("the handshake carried the bearer");
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
}
