package failover

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrNoEndpointForModel ends, before any attempt, a routed request whose
// body names a model that no enabled endpoint serves: every one has
// [Endpoint].Models, and none lists it (or an Azure endpoint with an
// APIVersion could only take it as a deployment name, which it cannot
// be). Its message names the model. RoundTrip returns it as it is, not
// in an [*Error]; the proxy answers it with a 404 model_not_found.
var ErrNoEndpointForModel = errors.New("failover: no endpoint serves the model")

// noModelError is ErrNoEndpointForModel for one model.
type noModelError struct{ model string }

func (e *noModelError) Error() string {
	return "failover: no endpoint serves model " + quoteModel(e.model)
}

func (e *noModelError) Is(target error) bool { return target == ErrNoEndpointForModel }

// quoteModel quotes a model name a caller sent, cut to a readable length,
// for messages.
func quoteModel(name string) string { return strconv.Quote(cut(name, 100)) }

// checkModels returns the problems of e's Models, APIType and APIVersion.
func (e *Endpoint) checkModels() []string {
	problems := e.checkAzure()
	if e.Models == nil {
		return problems
	}
	if len(e.Models) == 0 {
		return append(problems, "Models is empty; leave it nil to serve every model")
	}
	deployments := strings.EqualFold(e.APIType, APITypeAzure) && e.APIVersion != ""
	for _, name := range slices.Sorted(maps.Keys(e.Models)) {
		up := e.Models[name]
		if problem := checkModelName(name); problem != "" {
			problems = append(problems, fmt.Sprintf("Models: model name %s", problem))
			continue
		}
		if up == "" {
			up = name
		} else if problem := checkModelName(up); problem != "" {
			problems = append(problems, fmt.Sprintf("Models[%s]: %s", quoteModel(name), problem))
			continue
		}
		if deployments && !validDeployment(up) {
			problems = append(problems, fmt.Sprintf("Models[%s]: %s is not an Azure deployment name (letters, digits, '.', '_' and '-')", quoteModel(name), quoteModel(up)))
		}
	}
	return problems
}

// checkModelName says what is wrong with a model name, if anything: it
// is not empty, is UTF-8 and has no control character nor space at
// either end.
func checkModelName(name string) string {
	return modelNameProblem(name, quoteModel)
}

// modelNameProblem is checkModelName with the name quoted by quote (the
// environment's quoteEnv shows no more of a value than a short prefix).
func modelNameProblem(name string, quote func(string) string) string {
	switch {
	case name == "":
		return "is empty"
	case !utf8.ValidString(name):
		return "is not valid UTF-8"
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return quote(name) + " contains a control character"
	case strings.TrimSpace(name) != name:
		return quote(name) + " begins or ends with a space"
	}
	return ""
}

// checkModelSettings returns the problems of cfg that concern models as
// a whole: routing by model reads request bodies, which a negative
// MaxBodyBuffer forbids.
func checkModelSettings(cfg Config) []error {
	if cfg.MaxBodyBuffer >= 0 {
		return nil
	}
	for i, e := range cfg.Endpoints {
		if e.Models != nil || (strings.EqualFold(e.APIType, APITypeAzure) && e.APIVersion != "") {
			return []error{fmt.Errorf("failover: MaxBodyBuffer %d is negative (never read a body), but endpoint %d routes by model (Models, or an Azure APIVersion), which reads the body: leave MaxBodyBuffer 0 (8 MiB) or set its size", cfg.MaxBodyBuffer, i)}
		}
	}
	return nil
}

// parseEnvModels parses OPENAI_MODELS_N: a comma-separated list of name or
// name=upstream-name.
func parseEnvModels(v string) (map[string]string, string) {
	models := make(map[string]string)
	for item := range strings.SplitSeq(v, ",") {
		name, up, mapped := strings.Cut(item, "=")
		name, up = strings.TrimSpace(name), strings.TrimSpace(up)
		switch {
		case name == "" && !mapped && strings.TrimSpace(item) == "":
			return nil, "has an empty entry (two commas, or a comma at an end); want name or name=upstream-name, comma-separated"
		case name == "":
			return nil, fmt.Sprintf("entry %s has no model name before '='", quoteEnv(strings.TrimSpace(item)))
		case mapped && up == "":
			return nil, fmt.Sprintf("entry %s has no upstream name after '='", quoteEnv(strings.TrimSpace(item)))
		}
		for _, n := range []string{name, up} {
			if problem := modelNameProblem(n, quoteEnv); n != "" && problem != "" {
				return nil, "model name " + problem
			}
		}
		if _, dup := models[name]; dup {
			return nil, fmt.Sprintf("model %s is listed twice", quoteEnv(name))
		}
		models[name] = up
	}
	return models, ""
}

// modelRouting routes the requests of one configuration by the model
// their body names. It is built once per configuration and only read
// afterwards; a snapshot has none (nil) when no endpoint has Models or is
// an Azure endpoint with an APIVersion: then no body is read for it.
type modelRouting struct {
	plans map[string]*modelPlan // for every name an endpoint lists
	// For the names no endpoint lists: open for a name that can be an
	// Azure deployment, openBad for one that cannot.
	open, openBad *modelPlan
	// list is the answer to GET /models, and listed its names, when
	// every enabled endpoint has Models; nil otherwise.
	list   []byte
	listed map[string]bool
}

// modelPlan is how one model is routed: the endpoints that do not serve
// it, how many enabled ones do, and for each endpoint (by index) the name
// it is sent under.
type modelPlan struct {
	skip   bitset
	served int
	routes []modelRoute
}

// modelRoute is how an endpoint sends one model.
type modelRoute struct {
	// upstream is the name sent, "" for the caller's own; json and raw
	// are upstream as a JSON string literal and as form text, nil when
	// the body is sent unchanged.
	upstream  string
	json, raw []byte
	// deploy is, for an Azure deployments endpoint, the path segment
	// "/deployments/<name>"; "" to take the request's own model.
	deploy string
}

// newModelRouting returns the routing by model of eps; nil when nothing
// in eps routes by model.
func newModelRouting(eps []*endpoint) *modelRouting {
	if !slices.ContainsFunc(eps, func(e *endpoint) bool { return e.cfg.Models != nil || e.target.deploy }) {
		return nil
	}
	mr := &modelRouting{plans: make(map[string]*modelPlan)}
	all := true // every enabled endpoint lists its models
	listed := make(map[string]bool)
	for _, e := range eps {
		for name := range e.cfg.Models {
			if mr.plans[name] == nil {
				mr.plans[name] = newModelPlan(eps, name, validDeployment(name))
			}
			if !e.cfg.Disabled {
				listed[name] = true
			}
		}
		all = all && (e.cfg.Disabled || e.cfg.Models != nil)
	}
	mr.open = newModelPlan(eps, "", true)
	mr.openBad = newModelPlan(eps, "", false)
	if all {
		mr.listed = listed
		mr.list = modelList(slices.Sorted(maps.Keys(listed)))
	}
	return mr
}

// newModelPlan returns the plan of the model name over eps; name "" stands
// for any name no endpoint lists. deployable says whether the name can be
// an Azure deployment.
func newModelPlan(eps []*endpoint, name string, deployable bool) *modelPlan {
	p := &modelPlan{routes: make([]modelRoute, len(eps))}
	for i, e := range eps {
		up, listed := e.cfg.Models[name]
		switch {
		case e.cfg.Models != nil && (!listed || name == ""):
			p.skip.add(i)
			continue
		case e.cfg.Models == nil && e.target.deploy && !deployable:
			p.skip.add(i)
			continue
		}
		rt := &p.routes[i]
		if up != "" && up != name {
			rt.upstream, rt.json, rt.raw = up, jsonString(up), []byte(up)
		}
		if e.target.deploy && name != "" {
			rt.deploy = "/deployments/" + cmp.Or(up, name)
		}
		if !e.cfg.Disabled {
			p.served++
		}
	}
	return p
}

// planFor returns the plan of the model name.
func (mr *modelRouting) planFor(name string) *modelPlan {
	if p, ok := mr.plans[name]; ok {
		return p
	}
	if validDeployment(name) {
		return mr.open
	}
	return mr.openBad
}

// requestModel is the model of one request and how its attempts send it.
type requestModel struct {
	bodyModel
	plan   *modelPlan
	body   []byte    // the whole request body
	redact *redactor // the configuration's, for messages that name the model
	deploy string    // "/deployments/<name>" for the request's own name, once made
	// skipped are the endpoints whose skip was counted, once per request.
	skipped bitset
}

// byModel readies r, a request of a configuration that routes by model:
// it answers GET /models itself when every endpoint lists its models,
// reads the body into memory (bounded by MaxBodyBuffer) and finds its
// model, and ends the request at once when no endpoint serves it. It
// returns a response or an error to end the request with, or neither to
// go on. A body too large to read, or one that names no model (a file
// upload, a batch), goes on as a request without a model: every endpoint
// may take it, unchanged.
func (r *request) byModel(mr *modelRouting) (*http.Response, error) {
	if mr.list != nil && r.req.Method == http.MethodGet {
		if resp := mr.answer(r.req, r.m.rest); resp != nil {
			if r.req.Body != nil {
				_ = r.req.Body.Close()
			}
			return resp, nil
		}
	}
	body, err := r.body.load(r.req, r.s.maxBody)
	if err != nil || body == nil {
		return nil, err
	}
	rm := &requestModel{body: body, redact: r.s.redact}
	if !rm.find(r.req.Header.Get("Content-Type"), body) {
		return nil, nil
	}
	rm.plan = mr.planFor(rm.name)
	if rm.plan.served == 0 {
		return nil, &noModelError{model: rm.shown()}
	}
	r.st.model = rm
	return nil, nil
}

// apply readies out, the request of an attempt on e, for the request's
// model: the body with the model renamed as e sends it (the caller's body
// and the other attempts' keep their own), and for an Azure deployments
// endpoint the deployment in the path.
func (rm *requestModel) apply(out *http.Request, e *endpoint) {
	rt := &rm.plan.routes[e.index]
	if rt.json != nil {
		with := rt.json
		if rm.multipart {
			with = rt.raw
		}
		sp := newSplice(rm.body, rm.spans, with)
		out.Body, out.GetBody, out.ContentLength = sp.reader(), sp.getBody, sp.n
	}
	if e.target.deploy {
		seg := rt.deploy
		if seg == "" {
			if rm.deploy == "" {
				rm.deploy = "/deployments/" + rm.name
			}
			seg = rm.deploy
		}
		e.target.withDeployment(out.URL, seg)
	}
}

// skip records in p that e does not serve the request's model, counting
// the skip for e once per request.
func (rm *requestModel) skip(e *endpoint, p *pickResult) {
	p.unserved++
	p.model = rm
	if !rm.skipped.has(e.index) {
		rm.skipped.add(e.index)
		e.hot.modelSkips.Add(1)
		e.m.modelSkipped()
	}
}

// shown is the model's name for a message: without any secret of the
// configuration (a caller could send a key as a model's name).
func (rm *requestModel) shown() string { return rm.redact.string(rm.name) }

// quoted is the model's name quoted for a message; "" for none.
func (rm *requestModel) quoted() string {
	if rm == nil {
		return `""`
	}
	return quoteModel(rm.shown())
}

// noteFailure adds to e's last error the model of the attempt that just
// failed there, and the name it was sent under.
func (rm *requestModel) noteFailure(e *endpoint) {
	le := e.stats.lastErr.Load()
	if le == nil {
		return
	}
	msg := le.msg + " (model " + quoteModel(rm.shown())
	if up := rm.plan.routes[e.index].upstream; up != "" {
		msg += " sent as " + quoteModel(up)
	}
	e.stats.lastErr.CompareAndSwap(le, &lastError{msg: msg + ")", at: le.at})
}

// answer answers GET /models (the union of the endpoints' Models) and
// GET /models/<name> for a request whose routed path is rest; nil for any
// other path.
func (mr *modelRouting) answer(req *http.Request, rest string) *http.Response {
	var (
		status = http.StatusOK
		body   []byte
	)
	switch id, one := strings.CutPrefix(rest, "/models/"); {
	case rest == "/models" || rest == "/models/":
		body = mr.list
	case !one:
		return nil
	case mr.listed[id]:
		body = mustJSON(modelObject(id))
	default:
		status = http.StatusNotFound
		body = mustJSON(map[string]any{"error": map[string]any{
			"message": fmt.Sprintf("The model %s is not served by any endpoint of this configuration.", quoteModel(id)),
			"type":    "invalid_request_error", "param": nil, "code": "model_not_found",
		}})
	}
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// modelObject is a model as GET /models lists it.
func modelObject(name string) map[string]any {
	return map[string]any{"id": name, "object": "model", "created": 0, "owned_by": "failover"}
}

// modelList is the body of GET /models for names.
func modelList(names []string) []byte {
	data := make([]map[string]any, len(names))
	for i, n := range names {
		data[i] = modelObject(n)
	}
	return mustJSON(map[string]any{"object": "list", "data": data})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("failover: " + err.Error()) // maps of strings always encode
	}
	return b
}

// modelNames returns an endpoint's Models as [EndpointHealth] shows them:
// each name the endpoint serves and the name it sends (the same name
// where Models maps it to ""); nil when it serves every model.
func modelNames(models map[string]string) map[string]string {
	if models == nil {
		return nil
	}
	out := make(map[string]string, len(models))
	for name, up := range models {
		out[name] = cmp.Or(up, name)
	}
	return out
}
