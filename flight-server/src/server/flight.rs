//! Arrow Flight and Flight SQL on `--flight-port` (default 50051).
//!
//! - Live streams: `DoGet` with a ticket holding a job's name subscribes to its output: the
//!   rows it retains, then every new batch until the job ends. `GetFlightInfo` with the path
//!   `[name]` gives its schema and ticket; `ListFlights` lists them.
//! - Flight SQL: `CommandStatementQuery` runs read-only SQL over the [`Catalog`]: planned in
//!   `GetFlightInfo`, streamed in `DoGet` (never collected).
//! - With `FERRIS_AUTH_TOKEN` set, every call needs `authorization: Bearer <token>`.
//!
//! ```python
//! import pyarrow.flight as fl
//! reader = fl.connect("grpc://127.0.0.1:50051").do_get(fl.Ticket(b"big_orders"))
//! for chunk in reader: print(chunk.data)        # live batches as the job writes them
//! ```

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult,
    SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use ferris_connectors::flight::{hub, LiveStream};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::catalog::Catalog;
use super::jobs::{JobState, Registry};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The catalogue's catalog and schema names, as DataFusion has them.
const CATALOG: &str = "datafusion";
const SCHEMA: &str = "public";

/// How long `DoGet` waits for a just-deployed job to open its stream.
const STREAM_WAIT: Duration = Duration::from_secs(5);

static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "FerrisStreams");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.build().map_err(|e| e.to_string())
});

fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().map_err(|e| Status::internal(e.clone()))
}

fn df_status(e: datafusion::error::DataFusionError) -> Status {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => Status::invalid_argument(e.to_string()),
        E::ResourcesExhausted(_) => Status::resource_exhausted(e.to_string()),
        // the memory cap's error can arrive wrapped (through an Arrow stream)
        _ if e.to_string().contains("Resources exhausted") => Status::resource_exhausted(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let ipc: arrow_flight::IpcMessage =
        SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into().map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(ipc.0)
}

/// The Flight SQL half: queries over the catalogue.
pub struct SqlService {
    catalog: Arc<Catalog>,
}

impl SqlService {
    fn info<M: ProstMessageExt>(&self, cmd: M, schema: &Schema, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(cmd.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<datafusion::arrow::record_batch::RecordBatch, FlightError>> + Send + 'static,
) -> BoxStream<FlightData> {
    FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from).boxed()
}

/// `schema` as clients get it: text read as views (a Parquet table's) is sent as plain text.
fn plain_text(schema: &Schema) -> Schema {
    ferris_connectors::text_views::plain_schema(schema).map_or_else(|| schema.clone(), |s| s.as_ref().clone())
}

fn one_batch(schema: SchemaRef, batch: Result<datafusion::arrow::record_batch::RecordBatch, FlightError>) -> BoxStream<FlightData> {
    encode(schema, futures::stream::once(async { batch }))
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn do_handshake(&self, _request: Request<Streaming<HandshakeRequest>>) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        // The bearer token (if any) was checked before this call; nothing to exchange.
        let out = futures::stream::once(async { Ok(HandshakeResponse { protocol_version: 0, payload: Default::default() }) });
        Ok(Response::new(out.boxed()))
    }

    async fn get_flight_info_statement(&self, query: CommandStatementQuery, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let df = self.catalog.plan(&query.query).await.map_err(df_status)?;
        let schema = plain_text(df.schema().as_arrow());
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        self.info(ticket, &schema, request)
    }

    async fn do_get_statement(&self, ticket: TicketStatementQuery, _request: Request<Ticket>) -> Result<Response<BoxStream<FlightData>>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec()).map_err(|_| Status::invalid_argument("the statement handle is not UTF-8"))?;
        let df = self.catalog.plan(&sql).await.map_err(df_status)?;
        let schema: SchemaRef = Arc::new(plain_text(df.schema().as_arrow()));
        let stream = df.execute_stream().await.map_err(df_status)?;
        let plain = stream
            .map(|b| b.map_err(|e| FlightError::from(df_status(e))).and_then(|b| ferris_connectors::text_views::plain_batch(&b).map_err(FlightError::from)));
        Ok(Response::new(encode(schema, plain)))
    }

    async fn get_flight_info_sql_info(&self, query: CommandGetSqlInfo, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()?).schema();
        self.info(query, &schema, request)
    }

    async fn do_get_sql_info(&self, query: CommandGetSqlInfo, _request: Request<Ticket>) -> Result<Response<BoxStream<FlightData>>, Status> {
        let builder = query.into_builder(sql_info()?);
        Ok(Response::new(one_batch(builder.schema(), builder.build())))
    }

    async fn get_flight_info_catalogs(&self, query: CommandGetCatalogs, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.info(query, &schema, request)
    }

    async fn do_get_catalogs(&self, query: CommandGetCatalogs, _request: Request<Ticket>) -> Result<Response<BoxStream<FlightData>>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(Response::new(one_batch(builder.schema(), builder.build())))
    }

    async fn get_flight_info_schemas(&self, query: CommandGetDbSchemas, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.info(query, &schema, request)
    }

    async fn do_get_schemas(&self, query: CommandGetDbSchemas, _request: Request<Ticket>) -> Result<Response<BoxStream<FlightData>>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        Ok(Response::new(one_batch(builder.schema(), builder.build())))
    }

    async fn get_flight_info_tables(&self, query: CommandGetTables, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.info(query, &schema, request)
    }

    async fn do_get_tables(&self, query: CommandGetTables, _request: Request<Ticket>) -> Result<Response<BoxStream<FlightData>>, Status> {
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for t in self.catalog.tables() {
            let schema = match include_schema {
                true => self.catalog.table_schema(&t).await.map(|s| plain_text(&s)).unwrap_or_else(Schema::empty),
                false => Schema::empty(),
            };
            builder.append(CATALOG, SCHEMA, &t, "TABLE", &schema).map_err(Status::from)?;
        }
        Ok(Response::new(one_batch(builder.schema(), builder.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The whole Flight service: live streams first, everything else to Flight SQL.
pub struct FerrisFlight {
    sql: SqlService,
    registry: Arc<Registry>,
}

impl FerrisFlight {
    /// A service over `catalog`, waiting on `registry`'s jobs for their streams.
    pub fn new(catalog: Arc<Catalog>, registry: Arc<Registry>) -> Self {
        Self { sql: SqlService { catalog }, registry }
    }

    /// The live stream `name`; a job deployed a moment ago gets a few seconds to open it and
    /// declare its schema.
    async fn stream(&self, name: &str) -> Option<Arc<LiveStream>> {
        let deadline = Instant::now() + STREAM_WAIT;
        loop {
            let found = hub().get(name);
            if found.as_ref().is_some_and(|s| s.schema().is_some()) {
                return found;
            }
            let starting = self.registry.by_stream(name).is_some_and(|j| j.state() == JobState::Running);
            if !starting || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stream_info(stream: &LiveStream) -> Result<FlightInfo, Status> {
        let schema = stream.schema().unwrap_or_else(|| Arc::new(Schema::empty()));
        Ok(FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(stream.name().as_bytes().to_vec())))
            .with_descriptor(FlightDescriptor::new_path(vec![stream.name().to_string()]))
            .with_total_records(-1))
    }

    fn not_found(name: &str) -> Status {
        let names: Vec<String> = hub().list().iter().map(|s| s.name().to_string()).collect();
        Status::not_found(format!("no stream named '{name}'; streams: [{}]", names.join(", ")))
    }

    fn path_name(d: &FlightDescriptor) -> Option<String> {
        (d.r#type == DescriptorType::Path as i32 && d.path.len() == 1).then(|| d.path[0].clone())
    }
}

#[tonic::async_trait]
impl FlightService for FerrisFlight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;
    type DoExchangeStream = BoxStream<FlightData>;

    async fn handshake(&self, request: Request<Streaming<HandshakeRequest>>) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.sql, request).await
    }

    async fn list_flights(&self, _request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos: Vec<Result<FlightInfo, Status>> = hub().list().iter().map(|s| Self::stream_info(s)).collect();
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        if let Some(name) = Self::path_name(request.get_ref()) {
            let stream = self.stream(&name).await.ok_or_else(|| Self::not_found(&name))?;
            return Ok(Response::new(Self::stream_info(&stream)?));
        }
        FlightService::get_flight_info(&self.sql, request).await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(&self.sql, request).await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        if let Some(name) = Self::path_name(request.get_ref()) {
            let stream = self.stream(&name).await.ok_or_else(|| Self::not_found(&name))?;
            let schema = stream.schema().unwrap_or_else(|| Arc::new(Schema::empty()));
            return Ok(Response::new(SchemaResult { schema: schema_bytes(&schema)? }));
        }
        FlightService::get_schema(&self.sql, request).await
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = &request.get_ref().ticket;
        // A Flight SQL ticket is a protobuf `Any`; a live stream's is its name.
        let is_sql = arrow_flight::sql::Any::decode(ticket.as_ref()).is_ok_and(|a| a.type_url.starts_with("type.googleapis.com/arrow.flight.protocol.sql"));
        if !is_sql {
            let name = String::from_utf8_lossy(ticket).into_owned();
            let stream = self.stream(&name).await.ok_or_else(|| Self::not_found(&name))?;
            let schema = stream.schema().unwrap_or_else(|| Arc::new(Schema::empty()));
            let batches = stream.subscribe().map_err(|e| FlightError::from(Status::resource_exhausted(e.to_string())));
            return Ok(Response::new(encode(schema, batches)));
        }
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }

    async fn do_exchange(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.sql, request).await
    }
}

/// Checks the bearer token on every call when one is set.
pub fn check_token(token: Option<String>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(token) = &token else { return Ok(req) };
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if super::rest::token_matches(given, token) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong 'authorization: Bearer <token>' (FERRIS_AUTH_TOKEN)"))
        }
    }
}
