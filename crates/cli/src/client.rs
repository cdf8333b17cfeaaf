//! A gRPC client as one agency: mutual TLS with the agency's certificate, the actor header on every
//! call. Used by the demo, the audit tools and the healthcheck.

use std::path::{Path, PathBuf};

use anyhow::Context;
use signaalpoort_api::v1::audit_service_client::AuditServiceClient;
use signaalpoort_api::v1::consent_service_client::ConsentServiceClient;
use signaalpoort_api::v1::household_service_client::HouseholdServiceClient;
use signaalpoort_api::v1::notification_service_client::NotificationServiceClient;
use signaalpoort_api::v1::signal_service_client::SignalServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where to find an agency's client identity.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientIdentity {
    /// `<pki>/ca.pem`, `<pki>/agencies/<slug>.pem|.key` as `pki init` writes them.
    pub fn dev(pki_dir: &Path, slug: &str) -> ClientIdentity {
        ClientIdentity {
            ca: pki_dir.join("ca.pem"),
            cert: pki_dir.join("agencies").join(format!("{slug}.pem")),
            key: pki_dir.join("agencies").join(format!("{slug}.key")),
        }
    }
}

#[derive(Clone)]
pub struct ActorHeader(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for ActorHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("x-actor-id", self.0.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, ActorHeader>;

/// Typed clients for one agency and actor.
#[derive(Clone)]
pub struct AgencyClient {
    pub signals: SignalServiceClient<Authed>,
    pub households: HouseholdServiceClient<Authed>,
    pub notifications: NotificationServiceClient<Authed>,
    pub consents: ConsentServiceClient<Authed>,
    pub audit: AuditServiceClient<Authed>,
    pub coordination:
        signaalpoort_api::v1::coordination_service_client::CoordinationServiceClient<Authed>,
    pub channel: Channel,
}

pub async fn channel(
    endpoint: &str,
    id: &ClientIdentity,
    server_name: &str,
) -> anyhow::Result<Channel> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&id.ca)?))
        .identity(Identity::from_pem(read(&id.cert)?, read(&id.key)?))
        .domain_name(server_name);
    let channel = Channel::from_shared(endpoint.to_owned())
        .context("endpoint must be a URL such as https://127.0.0.1:7443")?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(channel)
}

impl AgencyClient {
    pub async fn connect(
        endpoint: &str,
        id: &ClientIdentity,
        actor: &str,
    ) -> anyhow::Result<AgencyClient> {
        let channel = channel(endpoint, id, "localhost").await?;
        Self::from_channel(channel, actor)
    }

    pub fn from_channel(channel: Channel, actor: &str) -> anyhow::Result<AgencyClient> {
        let header = ActorHeader(actor.parse().context("actor id must be ASCII")?);
        let with = || InterceptedService::new(channel.clone(), header.clone());
        Ok(AgencyClient {
            signals: SignalServiceClient::new(with()),
            households: HouseholdServiceClient::new(with()),
            notifications: NotificationServiceClient::new(with()),
            consents: ConsentServiceClient::new(with()),
            audit: AuditServiceClient::new(with()),
            coordination:
                signaalpoort_api::v1::coordination_service_client::CoordinationServiceClient::new(
                    with(),
                ),
            channel,
        })
    }
}
