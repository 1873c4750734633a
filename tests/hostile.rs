//! Hostile clients against the real binary: slow headers, stalled bodies, too many connections.

mod common;

use std::time::{Duration, Instant};

use common::{channel, client, Project, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_owned()
}

async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn slow_headers_get_408_and_others_are_served_meanwhile() {
    let srv = Project::new()
        .config("header_timeout = \"1s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = \"fine\";")
        .start();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // While 100 connections dribble their headers, a normal client is served at once.
    for _ in 0..5 {
        let started = Instant::now();
        let resp = client()
            .get(srv.url("/channels/c/api?token=c-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    for s in slow.iter_mut() {
        let answer = read_all(s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("request_timeout"));
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        client()
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let srv = Project::new()
        .config("body_timeout = \"1s\"")
        .channel(channel("c", "ok"))
        .script("ok", "body = startparam(4);")
        .start();
    let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
    s.write_all(b"POST /channels/c/api?token=c-token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let resp = client()
        .post(srv.url("/channels/c/api?token=c-token"))
        .body("whole")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "whole");
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let srv = Project::new().config("max_connections = 3").start();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s); // kept alive: each holds a slot
    }
    let waiting = tokio::spawn({
        let url = srv.url("/healthz");
        async move {
            let started = Instant::now();
            let status = client().get(url).send().await.unwrap().status();
            (status, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served while three were open"
    );
    drop(held.pop());
    let (status, waited) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
}
