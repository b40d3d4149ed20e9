package failover

import (
	"fmt"
	"net/url"
	"strings"
)

// The values of [Endpoint].APIType.
const (
	// APITypeOpenAI is an OpenAI-compatible API (OpenAI, OpenRouter, a
	// local vLLM or Ollama, most proxies): the key goes in
	// "Authorization: Bearer", requests go under BaseURL as the caller
	// sent them. It is what an empty APIType means.
	APITypeOpenAI = "openai"

	// APITypeAzure is Azure OpenAI. The key goes in the api-key header
	// (the caller's Authorization and api-key never reach it). BaseURL is
	// the resource's endpoint, such as
	// https://my-resource.openai.azure.com (a trailing /openai or
	// /openai/v1 is accepted and means the same). With an APIVersion, a
	// request goes to the classic deployments API,
	// /openai/deployments/<deployment>/chat/completions?api-version=...,
	// the deployment being the endpoint's Models mapping of the request's
	// model, or the model itself where Models does not map it (a request
	// without a model, such as a file upload, goes to /openai/files).
	// Without one, it goes to the v1 API, /openai/v1/chat/completions,
	// where the body's model (mapped by Models) names the deployment.
	APITypeAzure = "azure"
)

// checkAzure returns the problems of e's APIType and APIVersion.
func (e *Endpoint) checkAzure() []string {
	var problems []string
	switch strings.ToLower(e.APIType) {
	case "", APITypeOpenAI, APITypeAzure:
	default:
		problems = append(problems, fmt.Sprintf("APIType %q is not %q or %q (or empty, for openai)", cut(e.APIType, 40), APITypeOpenAI, APITypeAzure))
	}
	if e.APIVersion == "" {
		return problems
	}
	if !strings.EqualFold(e.APIType, APITypeAzure) {
		problems = append(problems, fmt.Sprintf("APIVersion is set, but APIType is %q: an api-version is for APIType %q", e.APIType, APITypeAzure))
	}
	if problem := checkAPIVersion(e.APIVersion); problem != "" {
		problems = append(problems, "APIVersion "+problem)
	}
	return problems
}

// checkAPIVersion says what is wrong with an api-version, if anything: it
// is letters, digits, '.', '_' and '-', as in 2024-10-21 or
// 2025-04-01-preview.
func checkAPIVersion(v string) string {
	if !validDeployment(v) {
		return fmt.Sprintf("%q is not an api-version such as 2024-10-21 (letters, digits, '.', '_' and '-')", cut(v, 40))
	}
	return ""
}

// validDeployment reports whether name can be an Azure deployment name, a
// segment of the request path: letters, digits, '.', '_' and '-', and not
// "." or "..".
func validDeployment(name string) bool {
	if name == "" || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// azure turns tg, the target of cfg (an Azure endpoint), into Azure's
// shape: the path under the resource's /openai (classic, with cfg's
// api-version in the query) or /openai/v1. The key header (api-key) is set
// by newTarget.
func (tg *target) azure(cfg Endpoint) {
	root, escRoot := azureRoot(tg.path, tg.escPath)
	suffix := "/openai/v1"
	if cfg.APIVersion != "" {
		suffix = "/openai"
		tg.deploy = true
		tg.setQuery("api-version", cfg.APIVersion)
	}
	tg.path, tg.escPath = root+suffix, escRoot+suffix
}

// azureRoot returns the resource's root of an Azure BaseURL's path (and
// of its escaped form): the path without a trailing /openai/v1 or /openai.
func azureRoot(path, escPath string) (string, string) {
	for _, s := range []string{"/openai/v1", "/openai"} {
		if root, ok := strings.CutSuffix(path, s); ok {
			if escRoot, ok := strings.CutSuffix(escPath, s); ok {
				return root, escRoot
			}
			return root, (&url.URL{Path: root}).EscapedPath()
		}
	}
	return path, escPath
}

// setQuery makes tg send the query parameter key=value with every request,
// in place of any value BaseURL gave it.
func (tg *target) setQuery(key, value string) {
	q := url.Values{}
	var raw []string
	for _, pair := range strings.Split(tg.rawQuery, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if uk, err := url.QueryUnescape(k); pair == "" || (err == nil && uk == key) {
			continue
		}
		raw = append(raw, pair)
	}
	for k, vs := range tg.query {
		if k != key {
			q[k] = vs
		}
	}
	q.Set(key, value)
	tg.query = q
	tg.rawQuery = strings.Join(append(raw, url.QueryEscape(key)+"="+url.QueryEscape(value)), "&")
}

// withDeployment puts seg ("/deployments/<name>") into u, an attempt's URL
// rewritten onto tg (an Azure deployments target), right after tg's path:
// /openai/chat/completions becomes /openai/deployments/<name>/chat/completions.
// A deployment name needs no escaping (see validDeployment).
func (tg *target) withDeployment(u *url.URL, seg string) {
	if !strings.HasPrefix(u.Path, tg.path) {
		return // cannot happen: the rewrite put tg's path first
	}
	u.Path = tg.path + seg + u.Path[len(tg.path):]
	if u.RawPath != "" && strings.HasPrefix(u.RawPath, tg.escPath) {
		u.RawPath = tg.escPath + seg + u.RawPath[len(tg.escPath):]
	}
}

// cut returns s whole if it has at most n bytes, else its first n bytes
// (never splitting a UTF-8 sequence) and "…", for messages that quote
// a value.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
