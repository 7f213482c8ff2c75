//! Transport compression of the server's messages, asked for with
//! `?compress=zlib-stream` or `?compress=zstd-stream` on the gateway URL
//! (as Discord's gateway does): one compression context per connection,
//! every server → client message compressed into it and flushed, and sent
//! as one binary frame. The client keeps one decompression context for the
//! connection and feeds it each frame in order; each frame decodes to
//! exactly one JSON message. Client → server frames stay plain text.
//!
//! - `zlib-stream`: one zlib stream (RFC 1950 header first); each message
//!   ends with a sync flush, so its last four bytes are `00 00 ff ff`.
//!   Python: one `zlib.decompressobj()` for the connection.
//! - `zstd-stream`: one zstd frame for the connection, never ended; each
//!   message is a flushed block. Python: one
//!   `zstandard.ZstdDecompressor().decompressobj()`.
//!
//! Shared by the server (encoder) and the SDK and benchmark (decoder), so
//! both ends agree on the names and the framing.

use std::io::Write;

/// The query parameter that asks for compression.
pub const QUERY_KEY: &str = "compress";

/// zlib's compression level: the library default (Discord's choice too).
const ZLIB_LEVEL: u32 = 6;

/// zstd's level: fast, and still well ahead of zlib on these messages.
const ZSTD_LEVEL: i32 = 3;

/// zstd's window (2^16 = 64 KiB): the stream never ends, so without a
/// bound every connection would hold the level's default window (2 MiB
/// at level 3). 64 KiB holds many recent events, which is where the gain
/// of a shared context comes from.
const ZSTD_WINDOW_LOG: u32 = 16;

/// A transport compression a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    ZlibStream,
    ZstdStream,
}

impl Compression {
    /// Every value `compress` may take.
    pub const ALL: [Compression; 2] = [Compression::ZlibStream, Compression::ZstdStream];

    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::ZlibStream => "zlib-stream",
            Compression::ZstdStream => "zstd-stream",
        }
    }

    /// The compression a query value names, if any.
    pub fn parse(value: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.as_str() == value)
    }
}

/// A compression context failed (the encoder: never on memory buffers in
/// practice; the decoder: a corrupt or truncated stream).
#[derive(Debug, thiserror::Error)]
#[error("{compression} stream: {source}")]
pub struct CodecError {
    pub compression: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// The server's side: one per connection.
pub struct Encoder {
    inner: EncoderInner,
}

enum EncoderInner {
    Zlib(flate2::write::ZlibEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(compression: Compression) -> Result<Encoder, CodecError> {
        let err = |source| CodecError {
            compression: compression.as_str(),
            source,
        };
        let inner = match compression {
            Compression::ZlibStream => EncoderInner::Zlib(flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::new(ZLIB_LEVEL),
            )),
            Compression::ZstdStream => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(err)?;
                z.window_log(ZSTD_WINDOW_LOG).map_err(err)?;
                EncoderInner::Zstd(z)
            }
        };
        Ok(Encoder { inner })
    }

    /// Compress one message into the connection's stream and flush it:
    /// the bytes of one binary frame.
    pub fn message(&mut self, text: &[u8]) -> Result<Vec<u8>, CodecError> {
        match &mut self.inner {
            // `flush` is a sync flush on flate2's writers (ends `00 00 ff ff`).
            EncoderInner::Zlib(z) => write_flush(z, text)
                .map(|()| std::mem::take(z.get_mut()))
                .map_err(|source| CodecError {
                    compression: "zlib-stream",
                    source,
                }),
            // `flush` is ZSTD_e_flush: the block ends, the frame does not.
            EncoderInner::Zstd(z) => write_flush(z, text)
                .map(|()| std::mem::take(z.get_mut()))
                .map_err(|source| CodecError {
                    compression: "zstd-stream",
                    source,
                }),
        }
    }
}

/// The client's side: one per connection, fed every binary frame in order.
pub struct Decoder {
    inner: DecoderInner,
}

enum DecoderInner {
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Decoder {
    pub fn new(compression: Compression) -> Result<Decoder, CodecError> {
        let inner = match compression {
            Compression::ZlibStream => DecoderInner::Zlib(flate2::write::ZlibDecoder::new(Vec::new())),
            Compression::ZstdStream => DecoderInner::Zstd(zstd::stream::write::Decoder::new(Vec::new()).map_err(
                |source| CodecError {
                    compression: "zstd-stream",
                    source,
                },
            )?),
        };
        Ok(Decoder { inner })
    }

    /// The message one binary frame holds.
    pub fn message(&mut self, frame: &[u8]) -> Result<Vec<u8>, CodecError> {
        match &mut self.inner {
            DecoderInner::Zlib(z) => write_flush(z, frame)
                .map(|()| std::mem::take(z.get_mut()))
                .map_err(|source| CodecError {
                    compression: "zlib-stream",
                    source,
                }),
            DecoderInner::Zstd(z) => write_flush(z, frame)
                .map(|()| std::mem::take(z.get_mut()))
                .map_err(|source| CodecError {
                    compression: "zstd-stream",
                    source,
                }),
        }
    }
}

fn write_flush(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message decodes on its own arrival, in one context per
    /// connection, and later messages reuse what earlier ones taught it.
    #[test]
    fn every_message_decodes_alone_in_one_context() {
        for c in Compression::ALL {
            let mut enc = Encoder::new(c).expect("encoder");
            let mut dec = Decoder::new(c).expect("decoder");
            let mut sizes = Vec::new();
            for i in 0..50 {
                let msg = format!(
                    "{{\"op\":0,\"s\":{i},\"t\":\"MESSAGE_CREATE\",\"d\":{{\"id\":\"01J{i:023}\",\"body\":\"hello there\"}}}}"
                );
                let frame = enc.message(msg.as_bytes()).expect("encode");
                if c == Compression::ZlibStream {
                    assert!(frame.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
                }
                sizes.push(frame.len());
                assert_eq!(dec.message(&frame).expect("decode"), msg.as_bytes(), "{c:?} {i}");
            }
            assert!(
                sizes[49] < sizes[0] / 2,
                "{c:?}: the shared context pays off: {sizes:?}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_none() {
        for c in Compression::ALL {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
        assert_eq!(Compression::parse("zlib"), None);
        assert_eq!(Compression::parse(""), None);
    }

    #[test]
    fn a_corrupt_frame_is_an_error() {
        let mut dec = Decoder::new(Compression::ZlibStream).expect("decoder");
        assert!(dec.message(b"not zlib at all").is_err());
    }
}
