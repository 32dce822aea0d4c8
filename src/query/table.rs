//! DataFusion tables over Strata's span data: one block's Parquet file, or the batches still in memory.
//!
//! A block table is a `DataSourceExec` over `ParquetSource` built by hand rather than a listing table: the file's
//! path and size come from the block's meta, so a scan costs no LIST or HEAD request, and footers are kept in
//! DataFusion's file-metadata cache. Filters are pushed into the Parquet scan (row-group statistics, page index)
//! and kept above it too (`Inexact`), because statistics only prune.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use parquet::arrow::RowNumber;

use crate::block::schema;
use crate::model::Tenant;
use crate::storage::{BlockEntry, data_path};

/// The URL under which the block object store is registered with DataFusion.
pub const STORE_URL: &str = "strata://blocks";

/// One block's span rows as a DataFusion table.
pub struct BlockTable {
    path: String,
    size: u64,
    store: Arc<dyn ObjectStore>,
    /// The file schema, plus the reader's row-number column when asked for.
    schema: SchemaRef,
    row_numbers: bool,
}

/// The virtual column holding each row's number in its block's file, on tables made `with_row_numbers`.
pub const ROW_NUMBER: &str = "row_number";

impl BlockTable {
    pub fn new(tenant: &Tenant, block: &BlockEntry, store: Arc<dyn ObjectStore>) -> Self {
        BlockTable {
            path: data_path(tenant, &block.meta.block_id).to_string(),
            size: block.meta.data_size,
            store,
            schema: schema::schema(),
            row_numbers: false,
        }
    }

    /// Adds the [`ROW_NUMBER`] column (produced by the Parquet reader, not stored), so a scan can name the rows
    /// it matched without reading the trace ID column.
    pub fn with_row_numbers(mut self) -> Self {
        let mut fields: Vec<FieldRef> = schema::schema().fields().iter().cloned().collect();
        fields.push(row_number_field());
        self.schema = Arc::new(Schema::new(fields));
        self.row_numbers = true;
        self
    }
}

fn row_number_field() -> FieldRef {
    Arc::new(Field::new(ROW_NUMBER, DataType::Int64, false).with_extension_type(RowNumber))
}

impl fmt::Debug for BlockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockTable({})", self.path)
    }
}

#[async_trait]
impl TableProvider for BlockTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table_schema = self.schema();
        let mut file_schema = TableSchemaBuilder::new(schema::schema());
        if self.row_numbers {
            file_schema = file_schema.with_virtual_columns(vec![row_number_field()]);
        }
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        let mut source = ParquetSource::new(file_schema.build())
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(self.store.clone(), cache)))
            .with_enable_page_index(true)
            // Late materialisation: filter columns are decoded first, the others only for rows that pass.
            .with_pushdown_filters(true)
            .with_reorder_filters(true);
        if let Some(predicate) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(table_schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
            .with_file(PartitionedFile::new(self.path.clone(), self.size))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}
