package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

type variantsDataquery = variants.Dataquery

// timeSeriesPanel is the shared shape of every time series panel: whole
// numbers (decimals 0), a table legend with mean/max/last, all series in the
// tooltip.
func timeSeriesPanel(s spec, id uint32, ds common.DataSourceRef, targets []cog.Builder[variants.Dataquery], datasource string) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Id(id).
		Title(s.title).
		Description(s.description).
		Datasource(ds).
		Targets(targets).
		Unit(s.unit).
		Decimals(0).
		Min(0).
		Height(s.h).
		Span(s.w).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"mean", "max", "lastNotNull"})).
		Tooltip(common.NewVizTooltipOptionsBuilder().
			Mode(common.TooltipDisplayModeMulti).
			Sort(common.SortOrderDescending)).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		SpanNulls(common.BoolOrFloat64{Bool: ptr(false)})
	if s.interval != "" {
		p.Interval(s.interval)
	}
	if s.timeFrom != "" {
		p.TimeFrom(s.timeFrom)
	}
	if s.viz == vizBars {
		p.DrawStyle(common.GraphDrawStyleBars).FillOpacity(80)
	}
	if s.labelled && datasource == ClickHouse {
		// The plugin turns the string column into a label; name series by it.
		p.DisplayName("${__field.labels.metric}")
	}
	if s.rightAxis != "" {
		p.OverrideByRegexp(s.rightAxis, []dashboard.DynamicConfigValue{
			{Id: "custom.axisPlacement", Value: "right"},
			{Id: "custom.axisLabel", Value: "tokens"},
		})
	}
	return p
}

// tablePanel shows query rows as they come, counts as whole numbers and the
// msColumns in milliseconds.
func tablePanel(s spec, id uint32, ds common.DataSourceRef, targets []cog.Builder[variants.Dataquery]) *table.PanelBuilder {
	p := table.NewPanelBuilder().
		Id(id).
		Title(s.title).
		Description(s.description).
		Datasource(ds).
		Targets(targets).
		Decimals(0).
		Height(s.h).
		Span(s.w).
		CellHeight(common.TableCellHeightSm).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{})).
		Filterable(true)
	if s.unit != "" {
		p.Unit(s.unit)
	}
	if s.timeFrom != "" {
		p.TimeFrom(s.timeFrom)
	}
	for _, c := range s.msColumns {
		p.OverrideByName(c, []dashboard.DynamicConfigValue{{Id: "unit", Value: "ms"}, {Id: "decimals", Value: 0}})
	}
	return p
}
