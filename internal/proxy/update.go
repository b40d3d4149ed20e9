package proxy

import (
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/failover-go/failover"
)

// updater is what the proxy needs of its transport to change the
// configuration at run time: [failover.Transport] has both methods (an
// interface, so that tests can fake a refusal). Update validates like
// failover.New and changes nothing on error; an endpoint whose Name is kept
// keeps its state.
type updater interface {
	Update(failover.Config) error
	Health() []failover.EndpointHealth
}

// ownedSettings are the transport settings the proxy owns, fixed at New:
// [Proxy.prepare] applies them, with the routing and the registry, to the
// Config at New and to every Config given to Update alike.
type ownedSettings struct {
	base           http.RoundTripper
	logger         *slog.Logger
	endpointHeader string
	maxBody        int64
	shared         failover.Shared // the fleet's shared state, nil for none
}

// prepare returns cfg with what the proxy sets in every transport Config:
// ClientBaseURLs {InternalBaseURL}, its registry, and its ownedSettings
// (Base, Logger, EndpointHeader, MaxBodyBuffer and Shared as at New).
func (p *Proxy) prepare(cfg failover.Config) failover.Config {
	// A copy of the endpoints: the proxy compares the next Config with
	// this one, whatever the caller does with its own later.
	cfg.Endpoints = slices.Clone(cfg.Endpoints)
	for i := range cfg.Endpoints {
		cfg.Endpoints[i].Header = cfg.Endpoints[i].Header.Clone()
		cfg.Endpoints[i].Models = maps.Clone(cfg.Endpoints[i].Models)
	}
	cfg.ClientBaseURLs = []string{InternalBaseURL}
	cfg.Registerer = p.registry
	cfg.Base = p.own.base
	cfg.Logger = p.own.logger
	cfg.EndpointHeader = p.own.endpointHeader
	cfg.MaxBodyBuffer = p.own.maxBody
	cfg.Shared = p.own.shared
	cfg.OnAttempt = recordAttempt
	return cfg
}

// Update applies cfg to the proxy's transport from the next request on,
// as [failover.ConfigFromEnv] returns one: the proxy sets in it what it sets
// at New (ClientBaseURLs, Registerer, and the Base, Logger, EndpointHeader
// and MaxBodyBuffer it started with), then hands it to the transport,
// which validates it like failover.New and changes nothing on error; an
// endpoint whose Name is kept keeps its breaker, cooldown and statistics.
// Update does not check for loops: call [CheckNoLoop] first. It logs at
// Info what changed, by endpoint name (added, removed, and which fields of
// an endpoint or of the rest of the Config changed), never a key, a header
// value or a URL's query; a Config that changes nothing is not applied.
// Its error says why cfg was refused; the running configuration then
// stays. Calls are serialised.
func (p *Proxy) Update(cfg failover.Config) error {
	fc := p.prepare(cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	epChanges, settings := diffConfigs(p.cfg, fc)
	if len(epChanges) == 0 && len(settings) == 0 {
		p.logger.Info("configuration unchanged", "endpoints", len(fc.Endpoints))
		return nil
	}
	if err := p.updater.Update(fc); err != nil {
		return err
	}
	infos := describeEndpoints(p.updater.Health(), fc.Endpoints)
	p.logChanges(p.endpoints, infos, p.cfg.Endpoints, fc.Endpoints, settings)
	p.cfg, p.endpoints = fc, infos
	return nil
}

// diffConfigs reports whether the endpoints of before and after differ (any
// field, in order; endpointsDiffer is then {"Endpoints"}) and which other
// fields of the Config do.
func diffConfigs(before, after failover.Config) (endpointsDiffer []string, settings []string) {
	if !reflect.DeepEqual(before.Endpoints, after.Endpoints) {
		endpointsDiffer = []string{"Endpoints"}
	}
	return endpointsDiffer, differentFields(reflect.ValueOf(before), reflect.ValueOf(after), "Endpoints")
}

// differentFields names the exported fields of the structs ov and nv, of
// one type, that differ, skip aside.
func differentFields(ov, nv reflect.Value, skip string) []string {
	var out []string
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		if f.IsExported() && f.Name != skip && !sameValue(ov.Field(i), nv.Field(i)) {
			out = append(out, f.Name)
		}
	}
	return out
}

// sameValue reports whether a and b hold the same value: deeply equal, or,
// for functions (which reflect.DeepEqual never finds equal unless nil),
// the same function.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Func {
		return a.Pointer() == b.Pointer()
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// changedFields names the fields of two configurations of one endpoint
// that differ, Name aside.
func changedFields(before, after failover.Endpoint) []string {
	return differentFields(reflect.ValueOf(before), reflect.ValueOf(after), "Name")
}

// logChanges logs, at Info, the endpoints added, removed and changed
// between the old and new configurations (infos name them, cfgs hold them,
// in the same order), the other settings that changed, and a summary.
func (p *Proxy) logChanges(oldInfos, newInfos []EndpointInfo, oldCfgs, newCfgs []failover.Endpoint, settings []string) {
	before := make(map[string]int, len(oldInfos))
	for i, e := range oldInfos {
		before[e.Name] = i
	}
	var added, changed, kept int
	for i, e := range newInfos {
		j, ok := before[e.Name]
		if !ok {
			added++
			p.logger.Info("endpoint added", e.LogAttrs()...)
			continue
		}
		delete(before, e.Name)
		fields := changedFields(oldCfgs[j], newCfgs[i])
		if len(fields) == 0 {
			kept++
			continue
		}
		changed++
		attrs := []any{"name", e.Name, "fields", strings.Join(fields, ",")}
		for _, f := range fields {
			switch f {
			case "BaseURL":
				attrs = append(attrs, "url", e.BaseURL)
			case "APIKey":
				attrs = append(attrs, "key", e.Key)
			}
		}
		p.logger.Info("endpoint changed", attrs...)
	}
	for _, e := range oldInfos {
		if _, gone := before[e.Name]; gone {
			p.logger.Info("endpoint removed", "name", e.Name)
		}
	}
	if len(settings) > 0 {
		p.logger.Info("settings changed", "fields", strings.Join(settings, ","))
	}
	p.logger.Info("configuration updated", "endpoints", len(newInfos),
		"added", added, "removed", len(before), "changed", changed, "unchanged", kept)
}

// LogAttrs returns the endpoint's attributes for a log line, as
// alternating keys and values: name, url (without query), priority,
// weight, key (the fingerprint), disabled=true for a disabled one, and
// for an endpoint with Models its models (as OPENAI_MODELS_N writes
// them), for an Azure one api_type (and api_version).
func (e EndpointInfo) LogAttrs() []any {
	attrs := []any{"name", e.Name, "url", e.BaseURL, "priority", e.Priority, "weight", e.Weight, "key", e.Key}
	if e.Disabled {
		attrs = append(attrs, "disabled", true)
	}
	if e.Models != nil {
		attrs = append(attrs, "models", strings.Join(e.Models, ","))
	}
	if e.APIType != "" {
		attrs = append(attrs, "api_type", e.APIType)
		if e.APIVersion != "" {
			attrs = append(attrs, "api_version", e.APIVersion)
		}
	}
	return attrs
}
