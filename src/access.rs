//! Who may enter a room and who may delete one: secrets proven against the room's record in the
//! contract's order (the room, 4404, then each secret, 4401), with the failed-attempt allowances
//! charged before the work they limit. Nothing here changes the hub: a join hands the proof to
//! [`Hub::admit`](crate::hub::Hub::admit).

use crate::{
    cluster::Deleted,
    credentials::{RoomRecord, Secret, StoreError, Turn},
    domain::RoomId,
    hub::Proven,
    protocol::{ErrorCode, Refusal},
    ratelimit::Attempt,
    state::AppState,
};

/// How often a proof starts over when the record it checked changed while argon2 ran.
const STALE_RETRIES: usize = 3;

/// Checks `secrets` against the room's record (a `None` secret is malformed and cannot match).
///
/// A live room whose record has accepted these secrets before costs an HMAC each and needs no
/// turn ([`Proven::Live`]). Anything slower (a store lookup, argon2) takes the room's turn and
/// is charged to `attempt` first, then given back if the secrets are right: a burst of wrong
/// guesses is refused from the first one past the allowance, before its work. The turn is
/// handed back with the record ([`Proven::Stored`]), so that the join that follows makes the
/// room live before a delete can take the turn.
pub async fn prove(
    state: &AppState,
    room_id: &RoomId,
    secrets: &[(Secret, Option<&[u8]>)],
    attempt: &mut Attempt<'_>,
) -> Result<Proven, Refusal> {
    let credentials = &state.credentials;
    let known = |record: &RoomRecord| {
        secrets
            .iter()
            .all(|(which, s)| s.is_some_and(|s| credentials.knows(record, *which, s)))
    };
    if let Some(room) = state.hub.live(room_id) {
        if known(&room.record) {
            return Ok(Proven::Live(room));
        }
    }
    for _ in 0..STALE_RETRIES {
        let turn = credentials.turn(room_id).await;
        let record = match state.hub.live(room_id) {
            Some(room) => room.record.clone(),
            None => {
                attempt.charge()?;
                match credentials.fetch(room_id).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return Err(ErrorCode::RoomNotFound.into()),
                    Err(_) => {
                        attempt.refund();
                        return Err(ErrorCode::StoreUnavailable.into());
                    }
                }
            }
        };
        let mut hashed = false;
        for &(which, secret) in secrets {
            let Some(secret) = secret else {
                attempt.charge()?;
                return Err(ErrorCode::InvalidCredentials.into());
            };
            if credentials.knows(&record, which, secret) {
                continue;
            }
            attempt.before_hashing()?;
            hashed = true;
            match credentials.verify(&record, which, secret).await {
                Ok(true) => {}
                Ok(false) => return Err(ErrorCode::InvalidCredentials.into()),
                Err(_) => {
                    attempt.refund();
                    return Err(Refusal::busy());
                }
            }
        }
        attempt.refund();
        // argon2 took a while: the record it was checked against must still be the room's.
        if hashed && state.hub.live(room_id).is_none() {
            match credentials.fetch(room_id).await {
                Ok(Some(current)) if current.same_credentials(&record) => {}
                Ok(_) => continue,
                Err(_) => return Err(ErrorCode::StoreUnavailable.into()),
            }
        }
        return Ok(Proven::Stored {
            record: Box::new(record),
            turn,
        });
    }
    Err(ErrorCode::StoreUnavailable.into())
}

/// Deletes a room's record, then tears the live room down: members get `room_deleted` and close
/// 4410. A record already gone still tears the live room down. Done inside the room's turn
/// (`turn`, or taken here), so that no join makes the room live from the record meanwhile.
pub async fn delete_room(
    state: &AppState,
    room_id: &RoomId,
    turn: Option<Turn>,
) -> Result<(), StoreError> {
    let _turn = match turn {
        Some(turn) => turn,
        None => state.credentials.turn(room_id).await,
    };
    state.credentials.delete(room_id).await?;
    let listed = state.lobby.remove(room_id);
    state.hub.delete(room_id);
    if let Some(cluster) = &state.cluster {
        let tag = state.credentials.pepper().room_hash(room_id);
        if let Err(e) = cluster.deleted(&tag, listed.then_some(room_id)).await {
            // The record is gone: the other nodes' members are closed when their node next
            // proves anything against it, and its live rooms expire with their members.
            log::warn!("cluster: a deletion not told to the other nodes: {e}");
        }
    }
    Ok(())
}

/// A room that vanishes when empty stayed empty through its grace: its record goes, unless
/// someone came back (here, or on another node of a cluster), or the room was created anew
/// meanwhile. Without Redis a node cannot know the other nodes' members: the record stays, and
/// expires with the room lifetime.
pub async fn vanish(state: &AppState, room_id: &RoomId, record: &RoomRecord) {
    if state.hub.live(room_id).is_some() {
        return;
    }
    if let Some(cluster) = &state.cluster {
        if !matches!(cluster.has_members(&record.id_hash).await, Ok(false)) {
            return;
        }
    }
    let turn = state.credentials.turn(room_id).await;
    let same = match state.credentials.store().get(&record.id_hash).await {
        Ok(Some(now)) => now.same_credentials(record),
        _ => false,
    };
    if !same || state.hub.live(room_id).is_some() {
        return;
    }
    // Again inside the turn: a join on another node may have come meanwhile.
    if let Some(cluster) = &state.cluster {
        if !matches!(cluster.has_members(&record.id_hash).await, Ok(false)) {
            return;
        }
    }
    match delete_room(state, room_id, Some(turn)).await {
        Ok(()) => {
            let listed_id = record.listed.then_some(room_id);
            let room = crate::audit::RoomRef {
                hash: &record.id_hash,
                listed_id,
            };
            state.audit.record(
                crate::audit::Record::new(crate::audit::Event::RoomDeleted)
                    .room(room)
                    .deleted_by(crate::audit::DeletedBy::Emptied),
            );
            log::info!(
                "room {} vanished, empty",
                crate::telemetry::room_tag(&record.id_hash)
            );
        }
        Err(e) => log::warn!("an empty room's record stays: {e}"),
    }
}

/// Another node deleted a room: the same teardown here (its record is gone already), inside
/// the room's turn, so that a join proving meanwhile either made the room live before (and is
/// torn down with it) or finds no record after.
pub async fn deleted_elsewhere(state: &AppState, deleted: &Deleted) {
    let room = state
        .cluster
        .as_ref()
        .and_then(|c| c.live_room(&deleted.tag));
    if deleted.check {
        let Some(live) = &room else {
            return;
        };
        match state.credentials.fetch(&live.id).await {
            Ok(Some(record)) if record.same_credentials(&live.record) => return,
            Ok(_) => {}
            // The store cannot say: the room stays until it can.
            Err(_) => return,
        }
    }
    let listed = deleted
        .listed
        .as_deref()
        .and_then(|id| RoomId::parse(id).ok());
    let id = room.as_ref().map(|r| r.id.clone()).or(listed);
    let _turn = match &id {
        Some(id) => Some(state.credentials.turn(id).await),
        None => None,
    };
    state.credentials.forget(&deleted.tag);
    if let Some(id) = id {
        state.lobby.remove(&id);
        state.hub.delete(&id);
    }
}
