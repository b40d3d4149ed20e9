package fakeopenai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// ModelHeader is the response header in which every Server reports the
// model the request named: the body's "model" (JSON, or the multipart form
// field), or, on Azure's classic deployments path, the deployment. It is
// absent when the request named none.
const ModelHeader = "X-Fake-Model"

// Azure configures a Server that answers as Azure OpenAI (see WithAzure).
// The zero value accepts any key, any api-version and any deployment.
type Azure struct {
	// APIKey is the key every request must present in its api-key header
	// (an Authorization header does not count); others get Azure's 401.
	// Empty accepts any request.
	APIKey string
	// APIVersion is the api-version the classic deployments API requires
	// in the query; another gets a 404, none a 400. Empty accepts any
	// (but still requires one).
	APIVersion string
	// Deployments are the deployment names the resource has: a classic
	// path naming another, or a v1 request whose body's model is
	// another, gets a 404 DeploymentNotFound. Nil accepts any name.
	Deployments []string
}

// WithAzure makes the Server answer as an Azure OpenAI resource whose
// endpoint is URL() (the prefix defaults to none with this option, as on
// Azure; WithPrefix still applies when given after it):
//
//	POST /openai/deployments/<deployment>/chat/completions?api-version=...
//	     (and /embeddings, /responses, /audio/transcriptions): the
//	     classic API, the deployment taken from the path;
//	GET  /openai/models?api-version=..., POST /openai/files?api-version=...
//	     (resource-level routes; a chat, completion, embedding, audio or
//	     image request without the deployments segment gets a 404, as on
//	     Azure, whatever model its body names);
//	POST /openai/v1/chat/completions (and the other routes): the v1 API,
//	     the deployment taken from the body's model.
//
// Every request must present a.APIKey in its api-key header. Any other
// path gets a 404 with Azure's error body.
func WithAzure(a Azure) Option {
	return func(c *config) {
		c.azure = &Azure{APIKey: a.APIKey, APIVersion: a.APIVersion, Deployments: slices.Clone(a.Deployments)}
		c.prefix = ""
	}
}

// azureRoute answers a request to an Azure Server.
func (s *Server) azureRoute(r *http.Request, body []byte, seq int64, f Fault) response {
	a := s.azure
	if a.APIKey != "" && r.Header.Get("Api-Key") != a.APIKey {
		return bodyResponse(http.StatusUnauthorized, azureError("401",
			"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."))
	}
	rest, ok := strings.CutPrefix(r.URL.Path, s.prefix+"/openai")
	if !ok {
		return azureNotFound()
	}
	if v1, ok := strings.CutPrefix(rest, "/v1"); ok && (v1 == "" || v1[0] == '/') {
		model := receivedModel(r, body)
		if model != "" && !a.has(model) {
			return deploymentNotFound(model)
		}
		return s.routeAt(r, v1, body, seq, "", f)
	}
	version := r.URL.Query().Get("api-version")
	switch {
	case version == "":
		return bodyResponse(http.StatusBadRequest, azureError("MissingApiVersionParameter",
			"The api-version query parameter (?api-version=) is required for all requests."))
	case a.APIVersion != "" && version != a.APIVersion:
		return azureNotFound()
	}
	if d, ok := strings.CutPrefix(rest, "/deployments/"); ok {
		deployment, route, _ := strings.Cut(d, "/")
		if deployment == "" || !a.has(deployment) {
			resp := deploymentNotFound(deployment)
			resp.model = deployment
			return resp
		}
		resp := s.routeAt(r, "/"+route, body, seq, deployment, f)
		resp.model = deployment
		return resp
	}
	if deploymentScoped(rest) {
		// As on Azure: the classic API serves these only under a
		// deployment; the body's model does not name one.
		return azureNotFound()
	}
	return s.routeAt(r, rest, body, seq, "", f)
}

// deploymentScoped reports whether the classic API serves the path rest
// (under /openai) only under /deployments/<deployment>: chat, completions,
// embeddings, audio and images. Resource-level routes (/models, /files,
// /batches, /responses) are served without one.
func deploymentScoped(rest string) bool {
	for _, p := range []string{"/chat/", "/completions", "/embeddings", "/audio/", "/images/"} {
		if rest == strings.TrimSuffix(p, "/") || strings.HasPrefix(rest, p) {
			return true
		}
	}
	return false
}

// routeAt answers a request as route does, for the API path rest.
func (s *Server) routeAt(r *http.Request, rest string, body []byte, seq int64, model string, f Fault) response {
	r2 := *r
	u := *r.URL
	u.Path = s.prefix + rest
	r2.URL = &u
	resp := s.route(&r2, body, seq, model, f)
	if resp.status == http.StatusNotFound {
		return azureNotFound()
	}
	return resp
}

// has reports whether the resource has the deployment name.
func (a *Azure) has(name string) bool {
	return a.Deployments == nil || slices.Contains(a.Deployments, name)
}

// azureError renders Azure's error body: a code and a message.
func azureError(code, message string) []byte {
	return mustJSON(obj{"error": obj{"code": code, "message": message}})
}

func azureNotFound() response {
	return bodyResponse(http.StatusNotFound, azureError("404", "Resource not found"))
}

func deploymentNotFound(name string) response {
	return bodyResponse(http.StatusNotFound, azureError("DeploymentNotFound",
		"The API deployment "+strconv.Quote(name)+" for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."))
}

// AzureRateLimited returns a 429 Fault as Azure OpenAI sends one: its
// error body, retry-after-ms set to ms and retry-after to the whole
// seconds above it.
func AzureRateLimited(ms int) Fault {
	f := StatusFault(http.StatusTooManyRequests).
		WithHeader("retry-after-ms", strconv.Itoa(ms)).
		WithHeader("retry-after", strconv.Itoa((ms+999)/1000))
	f.Body = string(azureError("429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after "+
		strconv.Itoa((ms+999)/1000)+" seconds."))
	return f
}

// ContentFiltered returns a 400 Fault as Azure OpenAI refuses a prompt
// its content filter flagged: code content_filter, with the filter's
// results in innererror.
func ContentFiltered() Fault {
	f := StatusFault(http.StatusBadRequest)
	f.Body = string(mustJSON(obj{"error": obj{
		"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
		"type":    nil,
		"param":   "prompt",
		"code":    "content_filter",
		"status":  400,
		"innererror": obj{
			"code": "ResponsibleAIPolicyViolation",
			"content_filter_result": obj{
				"hate":      obj{"filtered": true, "severity": "high"},
				"self_harm": obj{"filtered": false, "severity": "safe"},
				"sexual":    obj{"filtered": false, "severity": "safe"},
				"violence":  obj{"filtered": false, "severity": "safe"},
			},
		},
	}}))
	return f
}

// ContentFilterStop returns a KindContentFilter Fault: chat completions
// answer 200, as Azure does when its filter stops the output, with no
// content and finish_reason content_filter (a stream: Azure's
// prompt_filter_results chunk, the filtered chunk, then [DONE]). Other
// routes answer normally.
func ContentFilterStop() Fault { return Fault{Kind: KindContentFilter} }

// filteredChat is a chat completion stopped by the content filter.
func filteredChat(id, model string, stream bool) response {
	filter := obj{"hate": obj{"filtered": true, "severity": "high"}}
	if !stream {
		return jsonResponse(obj{
			"id": id, "object": "chat.completion", "created": created, "model": model,
			"choices": []obj{{"index": 0, "message": obj{"role": "assistant", "content": nil},
				"finish_reason": "content_filter", "content_filter_results": filter}},
		})
	}
	chunks := [][]byte{
		dataEvent(mustJSON(obj{"id": "", "object": "", "created": 0, "model": "", "choices": []obj{},
			"prompt_filter_results": []obj{{"prompt_index": 0, "content_filter_results": obj{}}}})),
		dataEvent(mustJSON(obj{"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": []obj{{"index": 0, "delta": obj{}, "finish_reason": "content_filter", "content_filter_results": filter}}})),
		dataEvent([]byte(doneMarker)),
	}
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		chunks: chunks,
	}
}

// receivedModel returns the model a request's body names: the JSON body's
// "model" string, or the multipart form field "model"; "" when none.
func receivedModel(r *http.Request, body []byte) string {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		return req.Model
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) || err != nil {
			return ""
		}
		if part.FormName() == "model" && part.FileName() == "" {
			v, _ := io.ReadAll(part)
			return string(v)
		}
	}
}
