//! Guessing invite codes trips the limits, per source address and per network.

mod common;

use common::{code_of, TestServer};
use trellis_protocol::signal::ErrorCode;
use trellis_protocol::InviteCode;
use trellis_signal::ratelimit::Rate;

/// A wrong guess for `code`'s invite: right locator, wrong secret.
fn wrong_guess(code: &InviteCode, n: u32) -> InviteCode {
    format!("{}-0000-0000-{n:04}", code.locator()).parse().unwrap()
}

#[tokio::test]
async fn wrong_codes_from_one_address_are_rate_limited() {
    let server = TestServer::start_with(|s| {
        s.limits.join_failures_per_source = Rate { burst: 3, per_minute: 1 };
    })
    .await;
    let mut owner = server.device().await;
    let net = owner.create_network("home").await.network.id;
    let code = owner.invite(net).await;
    let mut guesser = server.device().await;
    for _ in 0..3 {
        assert_eq!(code_of(guesser.join(&InviteCode::random(), "g").await), ErrorCode::InviteUnknown);
    }
    assert_eq!(code_of(guesser.join(&InviteCode::random(), "g").await), ErrorCode::RateLimited);
    // Even the right code waits: otherwise the answer would tell a limited guesser it won.
    let error = guesser.join(&code, "g").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert!(error.message.contains("wait"), "{}", error.message);
}

#[tokio::test]
async fn wrong_secrets_for_one_network_are_rate_limited_whatever_the_source() {
    let server = TestServer::start_with(|s| {
        s.limits.join_failures_per_source = Rate { burst: 1000, per_minute: 1000 };
        s.limits.join_failures_per_network = Rate { burst: 4, per_minute: 1 };
    })
    .await;
    let mut owner = server.device().await;
    let target = owner.create_network("target").await.network.id;
    let code = owner.invite(target).await;
    let mut other_owner = server.device().await;
    let elsewhere = other_owner.create_network("elsewhere").await.network.id;
    let other_code = other_owner.invite(elsewhere).await;

    // Several "devices" share the budget of the network they attack.
    for n in 0..4 {
        let mut guesser = server.device().await;
        assert_eq!(code_of(guesser.join(&wrong_guess(&code, n), "g").await), ErrorCode::InviteUnknown);
    }
    let mut guesser = server.device().await;
    assert_eq!(code_of(guesser.join(&wrong_guess(&code, 9), "g").await), ErrorCode::RateLimited);
    // Other networks are unaffected.
    assert!(guesser.join(&other_code, "friend").await.is_ok());
}
