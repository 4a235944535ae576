// Package sqlquery adds the two SQL panel targets that grafana-foundation-sdk
// (v0.0.12) lacks: the query of Grafana's PostgreSQL datasource and the query
// of the ClickHouse plugin (grafana-clickhouse-datasource v4). Both implement
// variants.Dataquery, so they plug into any SDK panel builder through
// WithTarget, and both marshal to exactly the JSON that Grafana itself stores
// for a raw-SQL ("code") query:
//
//	PostgreSQL: {"refId", "datasource": {"type", "uid"}, "editorMode": "code",
//	             "rawQuery": true, "format": "time_series"|"table", "rawSql"}
//	ClickHouse: {"refId", "datasource": {"type", "uid"}, "editorType": "sql",
//	             "queryType": "timeseries"|"table", "format": 0|1, "rawSql"}
//
// Importing this package registers both types with the SDK runtime
// (cog.NewRuntime), so dashboards that contain them unmarshal back into these
// types rather than into variants.UnknownDataquery.
//
// Values are plain structs; builders are not safe for concurrent use.
package sqlquery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// Plugin ids (datasource "type") of the two datasources.
const (
	PostgresType   = "grafana-postgresql-datasource"
	ClickHouseType = "grafana-clickhouse-datasource"
)

// Format is the shape a query returns, independent of the datasource.
type Format int

// Formats. Their JSON spelling differs per datasource (see the types below).
const (
	TimeSeries Format = iota
	Table
)

func (f Format) String() string {
	switch f {
	case TimeSeries:
		return "time_series"
	case Table:
		return "table"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// PostgresQuery is one target of a panel that uses Grafana's PostgreSQL
// datasource in code mode. Field order is the JSON order.
type PostgresQuery struct {
	RefId      string                `json:"refId"`
	Hide       *bool                 `json:"hide,omitempty"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	EditorMode string                `json:"editorMode"` // always "code"
	RawQuery   bool                  `json:"rawQuery"`   // always true
	Format     string                `json:"format"`     // "time_series" | "table"
	RawSql     string                `json:"rawSql"`
}

// ClickHouseQuery is one target of a panel that uses the ClickHouse plugin
// (v4) in its SQL editor. Format is numeric in the plugin: 0 time series,
// 1 table, 2 logs, 3 traces.
type ClickHouseQuery struct {
	RefId      string                `json:"refId"`
	Hide       *bool                 `json:"hide,omitempty"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	EditorType string                `json:"editorType"` // always "sql"
	QueryType  string                `json:"queryType"`  // "timeseries" | "table"
	Format     int                   `json:"format"`     // 0 | 1
	RawSql     string                `json:"rawSql"`
}

var (
	_ variants.Dataquery = PostgresQuery{}
	_ variants.Dataquery = ClickHouseQuery{}
)

// ImplementsDataqueryVariant marks PostgresQuery as an SDK dataquery.
func (PostgresQuery) ImplementsDataqueryVariant() {}

// DataqueryType is the datasource plugin id.
func (PostgresQuery) DataqueryType() string { return PostgresType }

// Equals reports whether other is an identical PostgresQuery.
func (q PostgresQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(PostgresQuery)
	return ok && q.RefId == o.RefId && eqBool(q.Hide, o.Hide) && eqRef(q.Datasource, o.Datasource) &&
		q.EditorMode == o.EditorMode && q.RawQuery == o.RawQuery && q.Format == o.Format && q.RawSql == o.RawSql
}

// Validate checks the fields Grafana needs to run the query.
func (q PostgresQuery) Validate() error {
	var errs []error
	if q.RefId == "" {
		errs = append(errs, errors.New("refId is empty"))
	}
	if q.RawSql == "" {
		errs = append(errs, errors.New("rawSql is empty"))
	}
	if q.Format != "time_series" && q.Format != "table" {
		errs = append(errs, fmt.Errorf("format %q is not time_series or table", q.Format))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("postgres query %s: %w", q.RefId, err)
	}
	return nil
}

// ImplementsDataqueryVariant marks ClickHouseQuery as an SDK dataquery.
func (ClickHouseQuery) ImplementsDataqueryVariant() {}

// DataqueryType is the datasource plugin id.
func (ClickHouseQuery) DataqueryType() string { return ClickHouseType }

// Equals reports whether other is an identical ClickHouseQuery.
func (q ClickHouseQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(ClickHouseQuery)
	return ok && q.RefId == o.RefId && eqBool(q.Hide, o.Hide) && eqRef(q.Datasource, o.Datasource) &&
		q.EditorType == o.EditorType && q.QueryType == o.QueryType && q.Format == o.Format && q.RawSql == o.RawSql
}

// Validate checks the fields the plugin needs to run the query.
func (q ClickHouseQuery) Validate() error {
	var errs []error
	if q.RefId == "" {
		errs = append(errs, errors.New("refId is empty"))
	}
	if q.RawSql == "" {
		errs = append(errs, errors.New("rawSql is empty"))
	}
	switch {
	case q.QueryType == "timeseries" && q.Format == 0, q.QueryType == "table" && q.Format == 1:
	default:
		errs = append(errs, fmt.Errorf("queryType %q with format %d is not timeseries/0 or table/1", q.QueryType, q.Format))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clickhouse query %s: %w", q.RefId, err)
	}
	return nil
}

func eqBool(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func eqStr(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func eqRef(a, b *common.DataSourceRef) bool {
	return (a == nil) == (b == nil) && (a == nil || eqStr(a.Type, b.Type) && eqStr(a.Uid, b.Uid))
}

// Builder builds a SQL target for one datasource; it satisfies
// cog.Builder[variants.Dataquery], so it goes straight into an SDK panel's
// WithTarget.
type Builder struct {
	pluginType string
	refID      string
	uid        string
	format     Format
	sql        string
	hide       *bool
}

var _ cog.Builder[variants.Dataquery] = (*Builder)(nil)

// NewPostgres starts a PostgreSQL target with the given SQL (Grafana macros
// unexpanded), refId "A", time series format and datasource uid
// "${datasource}".
func NewPostgres(sql string) *Builder { return newBuilder(PostgresType, sql) }

// NewClickHouse starts a ClickHouse target like NewPostgres.
func NewClickHouse(sql string) *Builder { return newBuilder(ClickHouseType, sql) }

// New starts a target for the datasource plugin id pluginType
// (PostgresType or ClickHouseType); Build fails for any other id.
func New(pluginType, sql string) *Builder { return newBuilder(pluginType, sql) }

func newBuilder(pluginType, sql string) *Builder {
	return &Builder{pluginType: pluginType, refID: "A", uid: "${datasource}", format: TimeSeries, sql: sql}
}

// RefId sets the target's refId.
func (b *Builder) RefId(refID string) *Builder { b.refID = refID; return b }

// Uid sets the datasource uid (default "${datasource}", the dashboard variable).
func (b *Builder) Uid(uid string) *Builder { b.uid = uid; return b }

// Format sets time series or table.
func (b *Builder) Format(f Format) *Builder { b.format = f; return b }

// Hide hides the target (it still runs for expressions/transformations).
func (b *Builder) Hide(hide bool) *Builder { b.hide = &hide; return b }

// Build returns the PostgresQuery or ClickHouseQuery, validated.
func (b *Builder) Build() (variants.Dataquery, error) {
	if b.format != TimeSeries && b.format != Table {
		return nil, fmt.Errorf("sqlquery: unknown format %v", b.format)
	}
	ref := &common.DataSourceRef{Type: strPtr(b.pluginType), Uid: strPtr(b.uid)}
	var q variants.Dataquery
	switch b.pluginType {
	case PostgresType:
		format := "time_series"
		if b.format == Table {
			format = "table"
		}
		q = PostgresQuery{RefId: b.refID, Hide: b.hide, Datasource: ref, EditorMode: "code", RawQuery: true, Format: format, RawSql: b.sql}
	case ClickHouseType:
		queryType, format := "timeseries", 0
		if b.format == Table {
			queryType, format = "table", 1
		}
		q = ClickHouseQuery{RefId: b.refID, Hide: b.hide, Datasource: ref, EditorType: "sql", QueryType: queryType, Format: format, RawSql: b.sql}
	default:
		return nil, fmt.Errorf("sqlquery: unknown datasource type %q", b.pluginType)
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	return q, nil
}

func strPtr(s string) *string { return &s }

// VariantConfigs returns the SDK runtime registrations of both query types.
// init registers them already; this is exported for runtimes built by hand.
func VariantConfigs() []variants.DataqueryConfig {
	return []variants.DataqueryConfig{
		{
			Identifier: PostgresType,
			DataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
				var q PostgresQuery
				err := json.Unmarshal(raw, &q)
				return q, err
			},
			StrictDataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
				var q PostgresQuery
				if err := strictUnmarshal(raw, &q); err != nil {
					return nil, err
				}
				return q, nil
			},
		},
		{
			Identifier: ClickHouseType,
			DataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
				var q ClickHouseQuery
				err := json.Unmarshal(raw, &q)
				return q, err
			},
			StrictDataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
				var q ClickHouseQuery
				if err := strictUnmarshal(raw, &q); err != nil {
					return nil, err
				}
				return q, nil
			},
		},
	}
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func init() {
	rt := cog.NewRuntime()
	for _, c := range VariantConfigs() {
		rt.RegisterDataqueryVariant(c)
	}
}
