//! The codec every `signaalpoort.v1` service and client uses: prost's, except that a request body
//! that does not decode (bad wire format, invalid UTF-8 in a string field) is a caller's mistake,
//! not the INTERNAL that tonic-prost answers. The status carries [`MALFORMED_MARKER`] so the
//! server's edge layer can write the refusal to the access log and answer it like any other
//! refusal (INVALID_ARGUMENT, ErrorInfo `MALFORMED_REQUEST`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Metadata key on a decode-failure status, its value what prost found wrong; the server's edge
/// layer consumes it, it never reaches a client.
pub const MALFORMED_MARKER: &str = "x-signaalpoort-malformed";

/// prost encoding; decoding failures become INVALID_ARGUMENT with [`MALFORMED_MARKER`].
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Decodes with prost; see [`StrictCodec`].
#[derive(Debug)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's decoder fails only on a body that is not a valid encoding of `U`.
        self.0
            .decode(buf)
            .map_err(|status| malformed(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of an undecodable body, marked for the edge layer.
pub fn malformed(description: &str) -> Status {
    let mut status = Status::invalid_argument(format!(
        "the request body is not a valid protobuf encoding of this method's request message: {description}"
    ));
    let printable: String = description
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let value = tonic::metadata::MetadataValue::try_from(printable.as_str())
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("undecodable"));
    status.metadata_mut().insert(MALFORMED_MARKER, value);
    status
}
