"""Register a signal with Signaalpoort from Python: grpcio, stubs generated from proto/, mutual TLS.

    python3 -m pip install grpcio grpcio-tools
    python3 -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
        ../../proto/signaalpoort/v1/*.proto
    python3 register_signal.py --endpoint 127.0.0.1:7443 --pki ../../certs/dev
"""

import argparse
import pathlib
import sys

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).parent / "gen"))
from signaalpoort.v1 import common_pb2, signals_pb2, signals_pb2_grpc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="127.0.0.1:7443")
    parser.add_argument("--pki", default="certs/dev", help="directory with ca.pem and agencies/")
    parser.add_argument("--agency", default="wij-groningen")
    parser.add_argument("--bsn", default="111222333", help="a test BSN that passes the elfproef")
    args = parser.parse_args()

    pki = pathlib.Path(args.pki)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "agencies" / f"{args.agency}.key").read_bytes(),
        certificate_chain=(pki / "agencies" / f"{args.agency}.pem").read_bytes(),
    )
    # The dev server certificate is issued to "localhost".
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(args.endpoint, credentials, options=options) as channel:
        signals = signals_pb2_grpc.SignalServiceStub(channel)
        metadata = [("x-actor-id", "python-example-1")]
        response = signals.RegisterSignal(
            signals_pb2.RegisterSignalRequest(
                bsn=args.bsn,
                category=common_pb2.CATEGORY_PARENTING,
                contact=common_pb2.ContactPoint(team="Wijkteam Vinkhuizen", phone="050 367 0000"),
            ),
            metadata=metadata,
        )
        print(f"registered signal {response.signal.signal_id} (refreshed={response.refreshed}, "
              f"expires {response.signal.expires_at.ToJsonString()})")

        # Bad input gets INVALID_ARGUMENT naming the field.
        try:
            signals.RegisterSignal(signals_pb2.RegisterSignalRequest(bsn="123456789"), metadata=metadata)
        except grpc.RpcError as err:
            print(f"invalid request refused as expected: {err.code().name}: {err.details()}")
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
