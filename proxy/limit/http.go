package limit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Header names, as OpenAI sends them.
const (
	HeaderLimitRequests     = "x-ratelimit-limit-requests"
	HeaderRemainingRequests = "x-ratelimit-remaining-requests"
	HeaderResetRequests     = "x-ratelimit-reset-requests"
	HeaderLimitTokens       = "x-ratelimit-limit-tokens"
	HeaderRemainingTokens   = "x-ratelimit-remaining-tokens"
	HeaderResetTokens       = "x-ratelimit-reset-tokens"
)

// Headers sets the rate-limit headers of d on h: the three request headers
// when d has a request limit, the three token headers when it has a token
// limit, and on refusals Retry-After (whole seconds, rounded up, at least 1)
// and retry-after-ms (read by the OpenAI SDKs). Reset values use OpenAI's
// duration format ("0s", "17ms", "1s", "8.64s", "6m0s"), rounded up to the
// millisecond. Unlimited decisions set nothing.
func Headers(h http.Header, d Decision) {
	if d.LimitRequests > 0 {
		h.Set(HeaderLimitRequests, strconv.FormatInt(d.LimitRequests, 10))
		h.Set(HeaderRemainingRequests, strconv.FormatInt(d.RemainingRequests, 10))
		h.Set(HeaderResetRequests, FormatReset(d.ResetRequests))
	}
	if d.LimitTokens > 0 {
		h.Set(HeaderLimitTokens, strconv.FormatInt(d.LimitTokens, 10))
		h.Set(HeaderRemainingTokens, strconv.FormatInt(d.RemainingTokens, 10))
		h.Set(HeaderResetTokens, FormatReset(d.ResetTokens))
	}
	if !d.Allowed && d.Reason != "" {
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(d.RetryAfter), 10))
		h.Set("retry-after-ms", strconv.FormatInt(ceilMs(d.RetryAfter), 10))
	}
}

// FormatReset formats a reset duration as OpenAI does: Go duration syntax
// rounded up to whole milliseconds, "0s" for zero or less.
func FormatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return (time.Duration(ceilMs(d)) * time.Millisecond).String()
}

func ceilMs(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// Status is the HTTP status WriteRefusal uses for d: 200 when allowed, 503
// for ReasonUnavailable (or no reason), 429 otherwise. For the audit event.
func (d Decision) Status() int {
	switch {
	case d.Allowed:
		return http.StatusOK
	case d.Reason == ReasonRequests || d.Reason == ReasonTokens || d.Reason == ReasonConcurrency:
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

// WriteRefusal answers a refused request (d.Allowed false): the headers of
// Headers and an OpenAI-style error body, status 429 (Too Many Requests), or 503 (Service
// Unavailable) for ReasonUnavailable. The body's type is d.Reason and its
// code "rate_limit_exceeded" ("rate_limit_unavailable" for 503). The
// caller must not have written the header yet. It returns the body it wrote
// (for the audit record).
func WriteRefusal(w http.ResponseWriter, d Decision) []byte {
	h := w.Header()
	Headers(h, d)
	status, code := d.Status(), "rate_limit_exceeded"
	wait := FormatReset(time.Duration(retrySeconds(d.RetryAfter)) * time.Second)
	if d.RetryAfter > 0 && d.RetryAfter < time.Second {
		wait = FormatReset(d.RetryAfter)
	}
	var msg string
	switch d.Reason {
	case ReasonRequests:
		msg = fmt.Sprintf("Rate limit reached for requests per minute (RPM): limit %d. Please try again in %s.", d.LimitRequests, wait)
	case ReasonTokens:
		msg = fmt.Sprintf("Rate limit reached for tokens per minute (TPM): limit %d. Please try again in %s.", d.LimitTokens, wait)
	case ReasonConcurrency:
		msg = fmt.Sprintf("Too many concurrent requests for this API key: limit %d. Please try again in %s.", d.LimitConcurrent, wait)
	default:
		code = "rate_limit_unavailable"
		msg = "Rate limiting is temporarily unavailable, so the request was refused. Please try again shortly."
	}
	typ := d.Reason
	if typ == "" {
		typ = ReasonUnavailable
	}
	b, _ := json.Marshal(apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: code}})
	b = append(b, '\n')
	if h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1")
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return b
}
