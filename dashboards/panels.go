package dashboards

import (
	"strconv"
	"strings"

	"github.com/llmtap/llmtap/dashboards/sqlquery"
)

// consumerFilter restricts rows to the consumer variable. With "All" the
// variable's custom all value '__all__' is inserted as is (Grafana skips the
// datasource's quoting for custom all values), which makes the first operand
// true; otherwise the variable is the quoted list 'a','b' and the first
// operand is false. The format is sqlstring (quotes doubled) on purpose: the
// ClickHouse plugin's default quoting leaves a quote inside a value as is,
// so a consumer named o'neil would break every panel. The same text works
// on PostgreSQL and ClickHouse, and All also keeps rows with an empty
// consumer (unauthenticated attempts).
const consumerFilter = `('__all__' IN (` + consumerVar + `) OR consumer IN (` + consumerVar + `))`

// consumerVar is the consumer variable in SQL (see consumerFilter).
const consumerVar = `${consumer:sqlstring}`

// AllValue is the consumer variable's custom all value (see consumerFilter).
const AllValue = `'__all__'`

// Panel titles (DESIGN.md fixes the first five; tests look panels up by them).
const (
	TitleRequestsPerMinute = "Requests per minute by consumer"
	TitleDailyUsage        = "Daily usage by consumer"
	TitleErrorCodes        = "Error codes"
	TitleUsageTable        = "Usage by consumer (24h)"
	TitleRecent            = "Recent conversations"
	TitleTokensPerMinute   = "Tokens per minute by consumer"
	TitleLatency           = "Latency p50/p95"
	TitleTTFT              = "Time to first token"
)

// RecentLimit is how many rows "Recent conversations" shows; TextLimit is
// how many characters of prompt and response each row carries; TopN is how
// many consumers the per-consumer charts show.
const (
	RecentLimit = 100
	TextLimit   = 1000
	TopN        = 10
)

// The limits as SQL text.
var (
	recentLimit = strconv.Itoa(RecentLimit)
	textLimit   = strconv.Itoa(TextLimit)
	topN        = strconv.Itoa(TopN)
)

type viz int

const (
	vizTimeSeries viz = iota
	vizBars           // time series drawn as bars
	vizTable
)

// spec is one panel, for both SQL datasources.
type spec struct {
	title, description string
	viz                viz
	unit               string
	interval           string // min interval ($__interval lower bound)
	timeFrom           string // relative time override
	w, h               uint32
	// labelled is set when a time series query returns one string column
	// ("metric") besides time and a single value: on ClickHouse the series
	// then carry a metric label, and the display name is set to it.
	labelled bool
	// msColumns are table columns shown in milliseconds.
	msColumns []string
	// rightAxis is a display-name regexp of series drawn on a right axis.
	rightAxis string
	targets   []target
}

type target struct {
	refID  string
	format sqlquery.Format
	pg, ch string
}

// consumerVariableSQL is the query of the consumer variable: the consumers
// with requests in the hours the range touches (hourly rollup).
var consumerVariableSQL = map[string]string{
	Postgres: `SELECT DISTINCT consumer FROM llm_usage_1h
WHERE hour BETWEEN date_trunc('hour', $__timeFrom()::timestamptz) AND $__timeTo() AND consumer <> ''
ORDER BY 1`,
	ClickHouse: `SELECT DISTINCT consumer FROM llm_usage_1h
WHERE hour >= toDateTime(intDiv(toUInt32($__fromTime), 3600) * 3600) AND hour <= $__toTime AND consumer != ''
ORDER BY consumer`,
}

// Every panel but Recent conversations reads the rollups of
// schema/*/0004_rollups.sql, which the database keeps equal to llm_requests
// (PostgreSQL: triggers; ClickHouse: materialized views):
//
//	llm_usage_1m      (minute, consumer): counts, tokens, latency/TTFT histograms or t-digests
//	llm_usage_1h      (hour, consumer): the same per hour
//	llm_usage_all_1m  (minute): all consumers together, for the percentiles with "All"
//	llm_status_1m     (minute, consumer, status): error responses (status >= 400)
//
// Ranges count whole minutes: a minute is in the range when it starts
// within it. Shared fragments follow. ClickHouse buckets with arithmetic
// (18.16 has no toStartOfInterval) and always writes $__interval_s and
// $__fromTime/$__toTime right before a ')' or ',': the plugin's macro matcher
// scans a macro without arguments forward to the next parenthesis group
// unless a ')' comes first.
const (
	pgName  = `CASE WHEN consumer = '' THEN '(none)' ELSE consumer END`
	chName  = `if(consumer = '', '(none)', consumer)`
	chTimeM = `toDateTime(intDiv(toUInt32(minute), $__interval_s) * $__interval_s) AS time`
	// where is the filter of the raw table (Recent conversations).
	where = `WHERE $__timeFilter(ts)
  AND ` + consumerFilter
	// whereM is the filter of the per-minute rollups (same text on both
	// datasources).
	whereM = `WHERE $__timeFilter(minute)
  AND ` + consumerFilter
	// isAll / notAll pick the all-consumers table or the per-consumer one;
	// both are constants after expansion, so the planner drops the other
	// branch of the UNION ALL.
	isAll  = `'__all__' IN (` + consumerVar + `)`
	notAll = `NOT ('__all__' IN (` + consumerVar + `)) AND consumer IN (` + consumerVar + `)`
	// Hours wholly inside the range [from, to]: [hourFrom, hourTo).
	pgHourFrom = `date_trunc('hour', $__timeFrom()::timestamptz - interval '1 microsecond') + interval '1 hour'`
	pgHourTo   = `date_trunc('hour', $__timeTo()::timestamptz)`
	chHourFrom = `toDateTime(intDiv(toUInt32($__fromTime) + 3599, 3600) * 3600)`
	chHourTo   = `toDateTime(intDiv(toUInt32($__toTime), 3600) * 3600)`
)

// usageSource is a subquery over the range: the hourly rollup for the
// hours wholly inside it and the per-minute rollup for the minutes before
// the first and after the last whole hour. cols are columns of both tables;
// the bucket start is column t.
func usageSource(kind, cols string) string {
	from, to := pgHourFrom, pgHourTo
	if kind == ClickHouse {
		from, to = chHourFrom, chHourTo
	}
	return `(
    SELECT hour AS t, consumer, ` + cols + `
    FROM llm_usage_1h
    WHERE hour >= ` + from + `
      AND hour < ` + to + `
      AND ` + consumerFilter + `
    UNION ALL
    SELECT minute AS t, consumer, ` + cols + `
    FROM llm_usage_1m
    WHERE $__timeFilter(minute)
      AND (minute < ` + from + ` OR minute >= ` + to + `)
      AND ` + consumerFilter + `
  ) usage`
}

// pgTopN wraps a per-bucket, per-consumer PostgreSQL query (columns "time",
// metric, values…, total) and keeps the rows of the TopN consumers by total,
// in one pass: total is a window sum over each consumer's buckets, ranked
// with dense_rank (ClickHouse 18.16 has no window functions, so its queries
// use chTopConsumers).
func pgTopN(cols, inner string) string {
	return `SELECT "time", metric, ` + cols + `
FROM (
  SELECT *, dense_rank() OVER (ORDER BY total DESC, metric) AS consumer_rank
  FROM (
` + indent(inner, "    ") + `
  ) per_bucket
) ranked
WHERE consumer_rank <= ` + topN + `
ORDER BY 1, 2`
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// chTopConsumers keeps the TopN consumers of source by the aggregate order.
func chTopConsumers(source, order string) string {
	return `
  AND consumer IN (
    SELECT consumer FROM ` + source + `
    GROUP BY consumer
    ORDER BY ` + order + ` DESC, consumer
    LIMIT ` + topN + `
  )`
}

// chMinuteSource is the per-minute rollup in the range, for chTopConsumers.
const chMinuteSource = `llm_usage_1m
    ` + `WHERE $__timeFilter(minute)
      AND ` + consumerFilter

// pgPercentiles is a latency/TTFT query over the merged histograms of col
// ("latency" or "ttft"); rows without values are dropped.
func pgPercentiles(col string) string {
	branch := func(table, cond string) string {
		return `  SELECT
    $__timeGroupAlias(minute, $__interval),
    llmtap_hist_merge(` + col + `_hist) AS h,
    min(` + col + `_min) AS lo,
    max(` + col + `_max) AS hi
  FROM ` + table + `
  WHERE $__timeFilter(minute)
    AND ` + cond + `
  GROUP BY 1`
	}
	return `SELECT "time", q[1] AS p50, q[2] AS p95
FROM (
  SELECT "time", llmtap_hist_quantiles(h, ARRAY[0.5, 0.95], lo, hi) AS q
  FROM (
` + indent(branch("llm_usage_all_1m", isAll), "  ") + `
    UNION ALL
` + indent(branch("llm_usage_1m", notAll), "  ") + `
  ) merged
) quantiles
WHERE q IS NOT NULL
ORDER BY 1`
}

// chPercentiles is pgPercentiles for ClickHouse (t-digest states; merge is
// the -Merge combinator of state's function, e.g. quantilesTDigestMerge).
func chPercentiles(merge, col string) string {
	branch := func(table, cond string) string {
		return `  SELECT
    ` + chTimeM + `,
    ` + merge + `(0.5, 0.95)(` + col + `) AS q
  FROM ` + table + `
  WHERE $__timeFilter(minute)
    AND ` + cond + `
  GROUP BY time`
	}
	// 18.16 does not skip a branch whose condition is a false constant; a
	// key range that is empty for the unused branch makes it read nothing.
	return `SELECT time, q[1] AS p50, q[2] AS p95
FROM (
` + branch("llm_usage_all_1m", isAll+`
    AND minute <= if(has([`+consumerVar+`], '__all__'), toDateTime(4294967295), toDateTime(0))`) + `
  UNION ALL
` + branch("llm_usage_1m", notAll+`
    AND minute <= if(has([`+consumerVar+`], '__all__'), toDateTime(0), toDateTime(4294967295))`) + `
)
WHERE NOT isNaN(p50)
ORDER BY time`
}

func errorCodes(lo, hi string) target {
	refID := "A"
	if lo == "500" {
		refID = "B"
	}
	return target{refID: refID, format: sqlquery.TimeSeries,
		pg: `SELECT
  $__timeGroupAlias(minute, $__interval),
  status::text AS metric,
  sum(requests)::bigint AS responses
FROM llm_status_1m
` + whereM + `
  AND status >= ` + lo + ` AND status < ` + hi + `
GROUP BY 1, 2
ORDER BY 1, 2`,
		ch: `SELECT
  ` + chTimeM + `,
  toString(status) AS metric,
  sum(requests) AS responses
FROM llm_status_1m
` + whereM + `
  AND status >= ` + lo + ` AND status < ` + hi + `
GROUP BY time, metric
ORDER BY time, metric`,
	}
}

var specs = []spec{
	{
		title:       TitleRequestsPerMinute,
		description: "Requests per minute of the 10 consumers with the most requests in the time range.",
		viz:         vizTimeSeries, unit: "reqpm", interval: "1m", w: 12, h: 8, labelled: true,
		targets: []target{{refID: "A", format: sqlquery.TimeSeries,
			pg: pgTopN("rpm", `SELECT
  $__timeGroupAlias(minute, $__interval),
  `+pgName+` AS metric,
  sum(requests) * 60000.0 / $__interval_ms AS rpm,
  sum(sum(requests)) OVER (PARTITION BY `+pgName+`) AS total
FROM llm_usage_1m
`+whereM+`
GROUP BY 1, 2`),
			ch: `SELECT
  ` + chTimeM + `,
  ` + chName + ` AS metric,
  countMerge(requests) * 60 / ($__interval_s) AS rpm
FROM llm_usage_1m
` + whereM + chTopConsumers(chMinuteSource, "countMerge(requests)") + `
GROUP BY time, metric
ORDER BY time, metric`,
		}},
	},
	{
		title:       TitleTokensPerMinute,
		description: "Tokens (prompt + completion) per minute of the 10 consumers with the most tokens in the time range.",
		viz:         vizTimeSeries, unit: "short", interval: "1m", w: 12, h: 8, labelled: true,
		targets: []target{{refID: "A", format: sqlquery.TimeSeries,
			pg: pgTopN("tpm", `SELECT
  $__timeGroupAlias(minute, $__interval),
  `+pgName+` AS metric,
  sum(tokens) * 60000.0 / $__interval_ms AS tpm,
  sum(sum(tokens)) OVER (PARTITION BY `+pgName+`) AS total
FROM llm_usage_1m
`+whereM+`
GROUP BY 1, 2`),
			ch: `SELECT
  ` + chTimeM + `,
  ` + chName + ` AS metric,
  sumMerge(tokens_sum) * 60 / ($__interval_s) AS tpm
FROM llm_usage_1m
` + whereM + chTopConsumers(chMinuteSource, "sumMerge(tokens_sum)") + `
GROUP BY time, metric
ORDER BY time, metric`,
		}},
	},
	{
		title:       TitleErrorCodes,
		description: "Responses with an error status per interval, by status code: query A holds client errors (4xx, incl. 499 client gone), query B server errors (5xx).",
		viz:         vizBars, unit: "short", interval: "1m", w: 12, h: 8, labelled: true,
		targets: []target{errorCodes("400", "500"), errorCodes("500", "600")},
	},
	{
		title:       TitleLatency,
		description: "Total request latency, median and 95th percentile per interval (estimated from per-minute histograms, see ROLLUPS.md).",
		viz:         vizTimeSeries, unit: "ms", interval: "1m", w: 12, h: 8,
		targets: []target{{refID: "A", format: sqlquery.TimeSeries,
			pg: pgPercentiles("latency"),
			ch: chPercentiles("quantilesTDigestMerge", "latency_q"),
		}},
	},
	{
		title:       TitleTTFT,
		description: "Time to first token of streamed responses, median and 95th percentile per interval (estimated from per-minute histograms, see ROLLUPS.md).",
		viz:         vizTimeSeries, unit: "ms", interval: "1m", w: 12, h: 8,
		targets: []target{{refID: "A", format: sqlquery.TimeSeries,
			pg: pgPercentiles("ttft"),
			ch: chPercentiles("quantilesTDigestIfMerge", "ttft_q"),
		}},
	},
	{
		title:       TitleDailyUsage,
		description: "Requests and tokens per UTC day of the 10 consumers with the most requests, over the last 7 days.",
		viz:         vizBars, unit: "short", interval: "1d", timeFrom: "7d", w: 12, h: 8,
		rightAxis: "^tokens",
		targets: []target{{refID: "A", format: sqlquery.TimeSeries,
			pg: pgTopN("requests, tokens", `SELECT
  $__timeGroupAlias(t, '1d'),
  `+pgName+` AS metric,
  sum(requests)::bigint AS requests,
  sum(tokens)::bigint AS tokens,
  sum(sum(requests)) OVER (PARTITION BY `+pgName+`) AS total
FROM `+usageSource(Postgres, "requests, tokens")+`
GROUP BY 1, 2`),
			ch: `SELECT
  toDateTime(intDiv(toUInt32(t), 86400) * 86400) AS time,
  ` + chName + ` AS metric,
  countMerge(requests) AS requests,
  sumMerge(tokens_sum) AS tokens
FROM ` + usageSource(ClickHouse, "requests, tokens_sum") + `
WHERE 1 = 1` + chTopConsumers(usageSource(ClickHouse, "requests"), "countMerge(requests)") + `
GROUP BY time, metric
ORDER BY time, metric`,
		}},
	},
	{
		title:       TitleUsageTable,
		description: "Per consumer over the last 24 hours: requests, prompt and completion tokens, error responses (status >= 400) and latency percentiles (estimated from histograms, see ROLLUPS.md).",
		viz:         vizTable, unit: "short", timeFrom: "24h", w: 24, h: 8,
		msColumns: []string{"p50 latency", "p95 latency"},
		targets: []target{{refID: "A", format: sqlquery.Table,
			pg: `SELECT "Consumer", "Requests", "Prompt tokens", "Completion tokens", "Errors",
  q[1] AS "p50 latency", q[2] AS "p95 latency"
FROM (
  SELECT
    ` + pgName + ` AS "Consumer",
    sum(requests)::bigint AS "Requests",
    sum(prompt_tokens)::bigint AS "Prompt tokens",
    sum(completion_tokens)::bigint AS "Completion tokens",
    sum(errors)::bigint AS "Errors",
    llmtap_hist_quantiles(llmtap_hist_merge(latency_hist), ARRAY[0.5, 0.95], min(latency_min), max(latency_max)) AS q
  FROM ` + indent(usageSource(Postgres, "requests, prompt_tokens, completion_tokens, errors, latency_hist, latency_min, latency_max"), "  ")[2:] + `
  GROUP BY 1
) per_consumer
ORDER BY 2 DESC, 1`,
			ch: `SELECT
  ` + chName + ` AS "Consumer",
  countMerge(requests) AS "Requests",
  sumMerge(prompt_sum) AS "Prompt tokens",
  sumMerge(completion_sum) AS "Completion tokens",
  countIfMerge(errors) AS "Errors",
  quantilesTDigestMerge(0.5, 0.95)(latency_q)[1] AS "p50 latency",
  quantilesTDigestMerge(0.5, 0.95)(latency_q)[2] AS "p95 latency"
FROM ` + usageSource(ClickHouse, "requests, prompt_sum, completion_sum, errors, latency_q") + `
GROUP BY "Consumer"
ORDER BY "Requests" DESC, "Consumer"`,
		}},
	},
	{
		title:       TitleRecent,
		description: "The latest 100 requests in the time range, newest first; prompt and response cut to 1000 characters.",
		// ClickHouse reads only the rows at or after the 100th newest
		// timestamp (a scalar subquery over ts alone), instead of reading
		// prompt and response of the whole range before sorting; and that
		// subquery reads only from the newest minute whose rollup count,
		// summed from the end of the range, reaches 100 (from the start of
		// time when it never does).
		viz: vizTable, w: 24, h: 12,
		targets: []target{{refID: "A", format: sqlquery.Table,
			pg: `SELECT
  ts AS "Time",
  ` + pgName + ` AS "Consumer",
  model AS "Model",
  left(prompt, ` + textLimit + `) AS "Prompt",
  left(response, ` + textLimit + `) AS "Response",
  status AS "Status"
FROM llm_requests
` + where + `
ORDER BY ts DESC
LIMIT ` + recentLimit,
			ch: `SELECT
  ts AS "Time",
  ` + chName + ` AS "Consumer",
  model AS "Model",
  substringUTF8(prompt, 1, ` + textLimit + `) AS "Prompt",
  substringUTF8(response, 1, ` + textLimit + `) AS "Response",
  status AS "Status"
FROM llm_requests
` + where + `
  AND ts >= (
    SELECT min(ts) FROM (
      SELECT ts FROM llm_requests
      WHERE $__timeFilter(ts)
        AND ` + consumerFilter + `
        AND ts >= (
          SELECT ms[indexOf(arrayMap(x -> x >= ` + recentLimit + `, arrayCumSum(ns)), 1)] FROM (
            SELECT groupArray(minute) AS ms, groupArray(n) AS ns FROM (
              SELECT minute, countMerge(requests) AS n FROM llm_usage_1m
              WHERE $__timeFilter(minute)
                AND ` + consumerFilter + `
              GROUP BY minute
              ORDER BY minute DESC
              LIMIT ` + recentLimit + `
            )
          )
        )
      ORDER BY ts DESC
      LIMIT ` + recentLimit + `
    )
  )
ORDER BY ts DESC
LIMIT ` + recentLimit,
		}},
	},
}
