//! cargo-fuzz target `peer_message`: the shared body of `tests/fuzz_targets/mod.rs`, plus openraft's own
//! request types (the shared body decodes field-by-field mirrors of them, since only the raft crate and this
//! crate depend on openraft).

#![no_main]

#[path = "../../tests/fuzz_targets/mod.rs"]
mod targets;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use raft::network::Wire;
use raft::NodeId;
use raft::TypeConfig;

fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) {
    if let Ok(value) = raft::network::decode::<T, { raft::network::DECODE_LIMIT }>(bytes) {
        if let Err(e) = raft::network::encode(&value) {
            panic!("a decoded peer message does not encode: {e}");
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    targets::peer_message(data);
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 3 {
        0 => decode::<Wire<AppendEntriesRequest<TypeConfig>>>(body),
        1 => decode::<Wire<VoteRequest<NodeId>>>(body),
        _ => decode::<Wire<InstallSnapshotRequest<TypeConfig>>>(body),
    }
});
