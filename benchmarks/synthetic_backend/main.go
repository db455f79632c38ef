// A synthetic Ollama-like model server for benchmarking the homellm gateway.
//
// It must be much faster than the gateway, or the benchmark measures it instead: it is plain
// net/http, answers without computing anything, and writes each streamed token as its own flushed
// write (as Ollama does). Its answers are deterministic, so a stream relayed through a proxy can be
// compared byte for byte with the same stream fetched directly.
//
//	GET  /api/version, /api/tags, /api/ps, /v1/models
//	POST /api/chat, /api/generate      Ollama: one JSON answer, or NDJSON ("stream" defaults to true)
//	POST /v1/chat/completions          OpenAI: one JSON answer, or SSE ("stream": true) ending in [DONE]
//	GET  /control                      live streams, the most at once, requests served
//	POST /control {"delay_us": N, "gather": N}
//	     delay_us: pause between tokens; gather: hold every stream after its first token until N
//	     streams are open at once (then they all run; it resets to 0), to prove real concurrency
//
// Tokens are "tok0 ", "tok1 ", ...; their number is options.num_predict (or max_tokens), default 5.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var models = []string{"fake:small", "fake:large"}

const createdAt = "2026-01-01T00:00:00Z"

type state struct {
	delayUs   atomic.Int64
	active    atomic.Int64
	maxActive atomic.Int64
	requests  atomic.Int64

	mu       sync.Mutex
	gather   int64
	released chan struct{}
}

func (s *state) enter() {
	n := s.active.Add(1)
	for {
		m := s.maxActive.Load()
		if n <= m || s.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
}

// waitGather blocks until `gather` streams are open at once (or 30 s pass).
func (s *state) waitGather() {
	s.mu.Lock()
	if s.gather <= 0 {
		s.mu.Unlock()
		return
	}
	ch := s.released
	if s.active.Load() >= s.gather {
		s.gather = 0
		close(s.released)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
	}
}

type request struct {
	Model     string          `json:"model"`
	Stream    *bool           `json:"stream"`
	MaxTokens *int            `json:"max_tokens"`
	Options   json.RawMessage `json:"options"`
}

func (r *request) tokens() int {
	if r.MaxTokens != nil && *r.MaxTokens >= 0 {
		return *r.MaxTokens
	}
	var opts struct {
		NumPredict *int `json:"num_predict"`
	}
	if len(r.Options) > 0 && json.Unmarshal(r.Options, &opts) == nil && opts.NumPredict != nil && *opts.NumPredict >= 0 {
		return *opts.NumPredict
	}
	return 5
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func known(model string) bool {
	for _, m := range models {
		if m == model {
			return true
		}
	}
	return false
}

func readRequest(w http.ResponseWriter, r *http.Request) (*request, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	var req request
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid JSON: " + err.Error()})
		return nil, false
	}
	if req.Model == "" {
		writeJSON(w, 400, map[string]string{"error": "model is required"})
		return nil, false
	}
	if !known(req.Model) {
		writeJSON(w, 404, map[string]string{"error": fmt.Sprintf("model '%s' not found", req.Model)})
		return nil, false
	}
	return &req, true
}

func (s *state) pause(i int) {
	if i == 1 {
		s.waitGather()
	}
	if d := s.delayUs.Load(); d > 0 {
		time.Sleep(time.Duration(d) * time.Microsecond)
	}
}

func (s *state) ollama(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	req, ok := readRequest(w, r)
	if !ok {
		return
	}
	chat := r.URL.Path == "/api/chat"
	n := req.tokens()
	piece := func(text string) string {
		t, _ := json.Marshal(text)
		if chat {
			return `"message":{"role":"assistant","content":` + string(t) + `}`
		}
		return `"response":` + string(t)
	}
	model, _ := json.Marshal(req.Model)
	final := func(text string) []byte {
		return []byte(`{"model":` + string(model) + `,"created_at":"` + createdAt + `",` + piece(text) +
			`,"done":true,"done_reason":"stop","total_duration":1000,"load_duration":10,"prompt_eval_count":7,` +
			`"prompt_eval_duration":100,"eval_count":` + strconv.Itoa(n) + `,"eval_duration":900}`)
	}
	if req.Stream != nil && !*req.Stream {
		var text bytes.Buffer
		for i := 0; i < n; i++ {
			fmt.Fprintf(&text, "tok%d ", i)
		}
		b := final(text.String())
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
		return
	}
	s.enter()
	defer s.active.Add(-1)
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher := w.(http.Flusher)
	prefix := []byte(`{"model":` + string(model) + `,"created_at":"` + createdAt + `",`)
	line := make([]byte, 0, 256)
	for i := 0; i < n; i++ {
		s.pause(i)
		line = append(line[:0], prefix...)
		line = append(line, piece("tok"+strconv.Itoa(i)+" ")...)
		line = append(line, `,"done":false}`+"\n"...)
		if _, err := w.Write(line); err != nil {
			return
		}
		flusher.Flush()
	}
	w.Write(append(final(""), '\n'))
}

func (s *state) openai(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	req, ok := readRequest(w, r)
	if !ok {
		return
	}
	n := req.tokens()
	model, _ := json.Marshal(req.Model)
	usage := `{"prompt_tokens":7,"completion_tokens":` + strconv.Itoa(n) + `,"total_tokens":` + strconv.Itoa(7+n) + `}`
	if req.Stream == nil || !*req.Stream {
		var text bytes.Buffer
		for i := 0; i < n; i++ {
			fmt.Fprintf(&text, "tok%d ", i)
		}
		t, _ := json.Marshal(text.String())
		b := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1767225600,"model":` + string(model) +
			`,"choices":[{"index":0,"message":{"role":"assistant","content":` + string(t) +
			`},"finish_reason":"stop"}],"usage":` + usage + `}`)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
		return
	}
	s.enter()
	defer s.active.Add(-1)
	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	head := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":` + string(model) + `,"choices":[{"index":0,`
	w.Write([]byte(head + `"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"))
	flusher.Flush()
	for i := 0; i < n; i++ {
		s.pause(i)
		if _, err := w.Write([]byte(head + `"delta":{"content":"tok` + strconv.Itoa(i) + ` "},"finish_reason":null}]}` + "\n\n")); err != nil {
			return
		}
		flusher.Flush()
	}
	w.Write([]byte(head + `"delta":{},"finish_reason":"stop"}],"usage":` + usage + "}\n\ndata: [DONE]\n\n"))
}

func (s *state) control(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var c struct {
			DelayUs *int64 `json:"delay_us"`
			Gather  *int64 `json:"gather"`
		}
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			writeJSON(w, 400, map[string]string{"error": err.Error()})
			return
		}
		if c.DelayUs != nil {
			s.delayUs.Store(*c.DelayUs)
		}
		if c.Gather != nil {
			s.mu.Lock()
			s.gather = *c.Gather
			s.released = make(chan struct{})
			s.mu.Unlock()
		}
		s.maxActive.Store(s.active.Load())
	}
	s.mu.Lock()
	gather := s.gather
	s.mu.Unlock()
	writeJSON(w, 200, map[string]int64{
		"active": s.active.Load(), "max_active": s.maxActive.Load(), "requests": s.requests.Load(),
		"delay_us": s.delayUs.Load(), "gather": gather,
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:11434", "listen address")
	delay := flag.Duration("delay", 0, "pause between streamed tokens")
	flag.Parse()
	s := &state{released: make(chan struct{})}
	s.delayUs.Store(delay.Microseconds())
	tags := map[string]any{"models": []map[string]any{}}
	for _, m := range models {
		tags["models"] = append(tags["models"].([]map[string]any), map[string]any{
			"name": m, "model": m, "size": 1000, "digest": "0",
			"details": map[string]string{"format": "gguf", "family": "fake"},
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"version": "0.12.0"})
	})
	mux.HandleFunc("/api/tags", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, tags) })
	mux.HandleFunc("/api/ps", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, tags) })
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, r *http.Request) {
		data := []map[string]string{}
		for _, m := range models {
			data = append(data, map[string]string{"id": m, "object": "model"})
		}
		writeJSON(w, 200, map[string]any{"object": "list", "data": data})
	})
	mux.HandleFunc("/api/chat", s.ollama)
	mux.HandleFunc("/api/generate", s.ollama)
	mux.HandleFunc("/v1/chat/completions", s.openai)
	mux.HandleFunc("/control", s.control)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Write([]byte("Ollama is running"))
			return
		}
		writeJSON(w, 404, map[string]string{"error": "404 page not found"})
	})
	server := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.ListenAndServe())
}
