package sim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

// Embedding returns the deterministic unit-length vector the simulator
// serves for text (for token-id inputs: the ids joined by single spaces).
func Embedding(text string, dim int) []float32 {
	v := make([]float32, dim)
	st := splitmix64(hashString(text))
	var norm float64
	for i := range v {
		x := float64(st.next()>>11)/float64(1<<53)*2 - 1
		v[i] = float32(x)
		norm += x * x
	}
	norm = math.Sqrt(norm)
	if norm > 0 {
		for i := range v {
			v[i] = float32(float64(v[i]) / norm)
		}
	}
	return v
}

type embeddingData struct {
	Index     int    `json:"index"`
	Object    string `json:"object"`
	Embedding any    `json:"embedding"`
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingRequest
	if !s.readBody(w, r, &req) || !s.checkModel(w, req.Model) {
		return
	}
	if len(req.Input) == 0 || string(req.Input) == "null" {
		writeError(w, http.StatusBadRequest, "input: Field required")
		return
	}
	inputs, err := parsePrompts(req.Input)
	if err != nil {
		writeError(w, http.StatusBadRequest, strings.Replace(err.Error(), "prompt", "input", 1))
		return
	}
	format := req.EncodingFormat
	if format == "" {
		format = "float"
	}
	if format != "float" && format != "base64" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("encoding_format: Input should be 'float' or 'base64', got %q", format))
		return
	}
	dim := s.cfg.EmbeddingDim
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > maxEmbeddingDim {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("dimensions must be in 1..%d, got %d.", maxEmbeddingDim, *req.Dimensions))
			return
		}
		dim = *req.Dimensions
	}
	p, msg := s.plan(r, false)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	switch p.fault {
	case faultError, faultMidStream:
		injectedError(w, p.status)
		return
	case faultClose:
		panic(http.ErrAbortHandler)
	}
	data := make([]embeddingData, len(inputs))
	total := 0
	for i, in := range inputs {
		vec := Embedding(in.seed, dim)
		total += in.tokens
		data[i] = embeddingData{Index: i, Object: "embedding", Embedding: vec}
		if format == "base64" {
			raw := make([]byte, 4*len(vec))
			for j, f := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(raw)
		}
	}
	writeJSON(w, http.StatusOK, struct {
		ID      string          `json:"id"`
		Object  string          `json:"object"`
		Created int64           `json:"created"`
		Model   string          `json:"model"`
		Data    []embeddingData `json:"data"`
		Usage   usageDetails    `json:"usage"`
	}{"embd-" + requestID(r), "list", time.Now().Unix(), s.cfg.Model, data,
		usageDetails{PromptTokens: total, TotalTokens: total}})
}
