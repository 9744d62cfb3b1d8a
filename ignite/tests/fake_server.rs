//! The client against fake servers on 127.0.0.1: nothing listening, a server that never
//! answers, servers that send garbage, and handshake credentials. Every case must end in an
//! error naming the address, never a panic or a hang.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use kfcache_ignite::{Client, ClientConfig, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn quick(addresses: Vec<String>) -> ClientConfig {
    ClientConfig::new(addresses)
        .with_connect_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(2))
}

/// Reads the client's handshake; returns (username, password) if it sent credentials.
async fn read_handshake(socket: &mut TcpStream) -> Option<(String, String)> {
    let len = socket.read_i32_le().await.unwrap() as usize;
    let mut body = vec![0; len];
    socket.read_exact(&mut body).await.unwrap();
    assert_eq!(body[0], 1, "handshake op");
    assert_eq!(&body[1..7], &[1, 0, 7, 0, 0, 0], "protocol 1.7.0");
    assert_eq!(body[7], 2, "thin client code");
    assert_eq!(&body[8..13], &[12, 0, 0, 0, 0], "empty feature bitmask");
    let mut rest = &body[13..];
    if rest.is_empty() {
        return None;
    }
    let mut strings = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 9);
        let len = i32::from_le_bytes(rest[1..5].try_into().unwrap()) as usize;
        strings.push(String::from_utf8(rest[5..5 + len].to_vec()).unwrap());
        rest = &rest[5 + len..];
    }
    Some((strings[0].clone(), strings[1].clone()))
}

async fn accept_handshake(socket: &mut TcpStream) {
    // success, empty features, node id
    let mut reply = vec![1u8, 12, 0, 0, 0, 0, 10];
    reply.extend([7u8; 16]);
    socket.write_i32_le(reply.len() as i32).await.unwrap();
    socket.write_all(&reply).await.unwrap();
}

/// A one-connection-at-a-time fake server running `script` for each accepted socket.
async fn fake_server<F, Fut>(script: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            script(socket).await;
        }
    });
    address
}

#[tokio::test]
async fn closed_port_fails_fast_naming_every_address() {
    let first = common::closed_port_address();
    let second = common::closed_port_address();
    let started = Instant::now();
    let error = Client::connect(quick(vec![first.clone(), second.clone()]))
        .await
        .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = error.to_string();
    assert_eq!(
        text,
        format!("no Ignite node reachable at {first}, {second}")
    );
    assert!(matches!(error, Error::NoNodeReachable { .. }));
}

#[tokio::test]
async fn silent_server_hits_the_connect_timeout() {
    let address = fake_server(|socket| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    })
    .await;
    let started = Instant::now();
    let error = Client::connect(quick(vec![address.clone()]))
        .await
        .expect_err("no handshake reply");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let Error::NoNodeReachable { last, .. } = error else {
        panic!("unexpected error {error}");
    };
    assert!(matches!(*last, Error::ConnectTimeout { .. }), "{last}");
}

#[tokio::test]
async fn garbage_handshake_reply_is_an_error() {
    for junk in [
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        vec![0xff; 64],
        vec![5, 0, 0, 0, 1, 12, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 0],
    ] {
        let address = fake_server(move |mut socket| {
            let junk = junk.clone();
            async move {
                let _ = read_handshake(&mut socket).await;
                let _ = socket.write_all(&junk).await;
                drop(socket);
            }
        })
        .await;
        let error = Client::connect(quick(vec![address.clone()]))
            .await
            .expect_err("junk handshake");
        assert!(error.to_string().contains(&address), "{error}");
    }
}

#[tokio::test]
async fn garbage_replies_after_handshake_fail_requests_without_panic() {
    // Each script answers the first request with something broken.
    let replies: Vec<Vec<u8>> = vec![
        // negative frame length
        (-1i32).to_le_bytes().to_vec(),
        // absurd frame length
        i32::MAX.to_le_bytes().to_vec(),
        // frame too short for a header
        vec![3, 0, 0, 0, 1, 2, 3],
        // error flag with a string claiming 2 GB
        {
            let mut frame = vec![];
            let mut body = vec![];
            body.extend(1i64.to_le_bytes());
            body.extend(1i16.to_le_bytes());
            body.extend(1i32.to_le_bytes());
            body.push(9);
            body.extend(i32::MAX.to_le_bytes());
            frame.extend((body.len() as i32).to_le_bytes());
            frame.extend(body);
            frame
        },
        // success with a value of the wrong type
        {
            let mut frame = vec![];
            let mut body = vec![];
            body.extend(1i64.to_le_bytes());
            body.extend(0i16.to_le_bytes());
            body.push(3); // int
            body.extend(5i32.to_le_bytes());
            frame.extend((body.len() as i32).to_le_bytes());
            frame.extend(body);
            frame
        },
        // success with a truncated byte array
        {
            let mut frame = vec![];
            let mut body = vec![];
            body.extend(1i64.to_le_bytes());
            body.extend(0i16.to_le_bytes());
            body.push(12);
            body.extend(1000i32.to_le_bytes());
            body.extend([1, 2, 3]);
            frame.extend((body.len() as i32).to_le_bytes());
            frame.extend(body);
            frame
        },
    ];
    for reply in replies {
        let address = fake_server(move |mut socket| {
            let reply = reply.clone();
            async move {
                read_handshake(&mut socket).await;
                accept_handshake(&mut socket).await;
                let mut request = [0u8; 256];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&reply).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let client = Client::connect(quick(vec![address.clone()])).await.unwrap();
        let error = client.cache("c").get("k").await.expect_err("garbage reply");
        assert!(
            error.to_string().contains(&address) || error.to_string().contains("\"k\""),
            "{error}"
        );
    }
}

#[tokio::test]
async fn credentials_are_sent_and_rejection_is_reported() {
    let address = fake_server(|mut socket| async move {
        let credentials = read_handshake(&mut socket).await;
        if credentials == Some(("kfcache".to_string(), "s3cret".to_string())) {
            accept_handshake(&mut socket).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            // failure, server version 1.7.0, message, status
            let mut reply = vec![0u8];
            for part in [1i16, 7, 0] {
                reply.extend(part.to_le_bytes());
            }
            let message = b"The user name or password is incorrect";
            reply.push(9);
            reply.extend((message.len() as i32).to_le_bytes());
            reply.extend(message);
            reply.extend(2000i32.to_le_bytes());
            socket.write_i32_le(reply.len() as i32).await.unwrap();
            socket.write_all(&reply).await.unwrap();
        }
    })
    .await;
    Client::connect(quick(vec![address.clone()]).with_credentials("kfcache", "s3cret"))
        .await
        .expect("right credentials");
    let error = Client::connect(quick(vec![address.clone()]).with_credentials("kfcache", "wrong"))
        .await
        .expect_err("wrong credentials");
    let Error::NoNodeReachable { last, .. } = error else {
        panic!("unexpected {error}");
    };
    assert!(
        matches!(&*last, Error::HandshakeRejected { message, .. } if message.contains("password is incorrect")),
        "{last}"
    );
    // The password never appears in debug output.
    let config = quick(vec![address]).with_credentials("kfcache", "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
}
