//! Feed positions for stores where many writers revoke at once without a counter they
//! would all contend for (DynamoDB, PostgreSQL): the writer's time in microseconds and a
//! random suffix. Positions are not handed out in commit order, so readers return only
//! settled ones (older than [`FEED_SETTLE`]) and a writer whose write took half of that
//! posts it again at a fresh position: a follower's cursor never passes an entry still on
//! its way.

use std::time::Duration;

/// How long a feed entry may take from its position (the writer's clock) to being readable.
/// A write that took longer is written again at a fresh position; readers see only
/// positions older than this, so followers never step over an entry still on its way.
/// Tolerates writer/reader clock skew up to half of it (Lambda clocks are NTP-synchronised).
pub const FEED_SETTLE: Duration = Duration::from_secs(1);

pub fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A feed position: microseconds × 1000 plus a random suffix, so writers on many
/// containers in the same microsecond rarely collide (a collision fails the write's
/// condition and takes another).
pub fn feed_position(micros: i64) -> i64 {
    let r = u16::from_le_bytes([
        uuid::Uuid::new_v4().as_bytes()[0],
        uuid::Uuid::new_v4().as_bytes()[1],
    ]);
    micros.saturating_mul(1000) + i64::from(r % 1000)
}

/// The highest position a reader may return now, for a feed settling in `settle`.
pub fn settled_horizon(settle: Duration) -> i64 {
    let settle = settle.as_micros() as i64;
    (micros_now() - settle).saturating_mul(1000) + 999
}
