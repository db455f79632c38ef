// Decodes request bodies the way Ollama does (gin's ShouldBindJSON: json.NewDecoder(r).Decode(&req))
// into structs with Ollama's JSON tags, and prints the fields the gateway's checks depend on.
// Input: one JSON object per line, {"type": "...", "body_b64": "..."}. Output: one JSON object per line.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
)

type ChatRequest struct { // api.ChatRequest (the fields that matter here)
	Model    string            `json:"model"`
	Messages []json.RawMessage `json:"messages"`
	Stream   *bool             `json:"stream,omitempty"`
	Options  map[string]any    `json:"options"`
	Format   json.RawMessage   `json:"format,omitempty"`
}

type ShowRequest struct { // api.ShowRequest
	Model   string `json:"model"`
	System  string `json:"system"`
	Verbose bool   `json:"verbose"`
	Name    string `json:"name"`
}

type CopyRequest struct { // api.CopyRequest
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

type CreateRequest struct { // api.CreateRequest
	Model string `json:"model"`
	From  string `json:"from"`
	Name  string `json:"name"`
}

type OpenAIChat struct { // openai.ChatCompletionRequest
	Model    string            `json:"model"`
	Messages []json.RawMessage `json:"messages"`
	Stream   bool              `json:"stream"`
}

type Case struct {
	Type    string `json:"type"`
	BodyB64 string `json:"body_b64"`
}

func decode(kind string, body []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	switch kind {
	case "chat":
		var r ChatRequest
		err := dec.Decode(&r)
		return map[string]string{"model": r.Model}, err
	case "show":
		var r ShowRequest
		err := dec.Decode(&r)
		return map[string]string{"model": r.Model, "name": r.Name, "system": r.System}, err
	case "copy":
		var r CopyRequest
		err := dec.Decode(&r)
		return map[string]string{"source": r.Source, "destination": r.Destination}, err
	case "create":
		var r CreateRequest
		err := dec.Decode(&r)
		return map[string]string{"model": r.Model, "from": r.From, "name": r.Name}, err
	case "openai":
		var r OpenAIChat
		err := dec.Decode(&r)
		return map[string]string{"model": r.Model}, err
	}
	return nil, fmt.Errorf("unknown type %s", kind)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c Case
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			panic(err)
		}
		body, err := base64.StdEncoding.DecodeString(c.BodyB64)
		if err != nil {
			panic(err)
		}
		fields, derr := decode(c.Type, body)
		res := map[string]any{"ok": derr == nil, "fields": fields}
		if derr != nil {
			res["error"] = derr.Error()
		}
		if err := out.Encode(res); err != nil {
			panic(err)
		}
	}
}
