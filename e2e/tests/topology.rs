//! The harness itself: homes reach the server through their NATs, the internet cannot
//! reach into a home, and everything is gone afterwards.

use trellis_e2e::privileged_or_explain;
use trellis_e2e::topology::{Nat, World, SERVER_IP};

fn namespaces() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout,
    )
    .into_owned()
}

#[test]
fn homes_reach_the_internet_through_nat_and_nothing_reaches_in() {
    if !privileged_or_explain("the topology test") {
        return;
    }
    let prefix;
    {
        let mut world = World::new("topo");
        let easy = world.add_home("easy", Nat::Easy);
        let symmetric = world.add_home("sym", Nat::Symmetric);
        prefix = world.internet.name.trim_end_matches('i').to_string();
        for home in [easy, symmetric] {
            let out = world.exec(home, &["ping", "-c", "1", "-W", "2", SERVER_IP]);
            assert!(out.status.success(), "home {home} cannot reach the server: {out:?}");
        }
        // Unsolicited traffic from the internet does not reach a device, nor its router.
        let wan = world.homes[easy].wan_ip.clone();
        let out = world.internet.exec(&["ping", "-c", "1", "-W", "1", &wan]);
        assert!(!out.status.success(), "the router must drop unsolicited pings");
        let out = world.internet.exec(&["ping", "-c", "1", "-W", "1", "198.51.100.2"]);
        assert!(!out.status.success(), "a home's LAN must not be reachable from the internet");
    }
    let left = namespaces();
    assert!(!left.contains(&prefix), "namespaces left behind: {left}");
}
