//! The `push` backend: a device registry, presence awareness, and
//! notifications through FCM v1, APNs, Web Push and MongoosePush
//! (contract: `shared/design/push.md`).

pub mod provider;

pub mod apns;
pub mod es256;
mod transport;
mod truncate;
pub mod webpush;
