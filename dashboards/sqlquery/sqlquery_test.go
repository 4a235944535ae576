package sqlquery

import (
	"encoding/json"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
)

func TestJSONMatchesGrafana(t *testing.T) {
	tests := []struct {
		name string
		b    *Builder
		want string
	}{
		{"postgres time series", NewPostgres("SELECT 1"),
			`{"refId":"A","datasource":{"type":"grafana-postgresql-datasource","uid":"${datasource}"},"editorMode":"code","rawQuery":true,"format":"time_series","rawSql":"SELECT 1"}`},
		{"postgres table", NewPostgres("SELECT 2").RefId("B").Format(Table),
			`{"refId":"B","datasource":{"type":"grafana-postgresql-datasource","uid":"${datasource}"},"editorMode":"code","rawQuery":true,"format":"table","rawSql":"SELECT 2"}`},
		{"clickhouse time series", NewClickHouse("SELECT 1"),
			`{"refId":"A","datasource":{"type":"grafana-clickhouse-datasource","uid":"${datasource}"},"editorType":"sql","queryType":"timeseries","format":0,"rawSql":"SELECT 1"}`},
		{"clickhouse table, fixed uid, hidden", NewClickHouse("SELECT 2").Format(Table).Uid("ch1").Hide(true),
			`{"refId":"A","hide":true,"datasource":{"type":"grafana-clickhouse-datasource","uid":"ch1"},"editorType":"sql","queryType":"table","format":1,"rawSql":"SELECT 2"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := tt.b.Build()
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(q)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("got  %s\nwant %s", b, tt.want)
			}
			// The SDK runtime unmarshals it back into the same type.
			back, err := cog.UnmarshalDataquery(b, "")
			if err != nil {
				t.Fatal(err)
			}
			if !back.Equals(q) || back.DataqueryType() != q.DataqueryType() {
				t.Errorf("round trip gave %#v, want %#v", back, q)
			}
			strict, err := cog.StrictUnmarshalDataquery(b, q.DataqueryType())
			if err != nil || !strict.Equals(q) {
				t.Errorf("strict round trip: %v %#v", err, strict)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for name, b := range map[string]*Builder{
		"empty sql":      NewPostgres(""),
		"empty refId":    NewClickHouse("SELECT 1").RefId(""),
		"unknown plugin": New("mysql", "SELECT 1"),
		"bad format":     NewPostgres("SELECT 1").Format(Format(7)),
	} {
		if q, err := b.Build(); err == nil {
			t.Errorf("%s: built %#v", name, q)
		}
	}
	if err := (ClickHouseQuery{RefId: "A", RawSql: "x", QueryType: "table", Format: 0}).Validate(); err == nil {
		t.Error("table with format 0 validated")
	}
	if _, err := cog.StrictUnmarshalDataquery([]byte(`{"refId":"A","rawSql":"x","bogus":1}`), PostgresType); err == nil {
		t.Error("strict unmarshal accepted an unknown field")
	}
}

func TestEquals(t *testing.T) {
	a, _ := NewPostgres("SELECT 1").Build()
	b, _ := NewPostgres("SELECT 1").Build()
	c, _ := NewPostgres("SELECT 2").Build()
	d, _ := NewClickHouse("SELECT 1").Build()
	if !a.Equals(b) || a.Equals(c) || a.Equals(d) || a.Equals(variants.UnknownDataquery{}) {
		t.Error("Equals is wrong")
	}
}
