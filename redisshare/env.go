package redisshare

import (
	"os"
	"strings"
)

// Names of the environment variables [FromEnv] reads; failover proxy reads
// the same.
const (
	// EnvURL is the Redis URL (redis:// or rediss://) of the fleet's
	// shared state.
	EnvURL = "FAILOVER_REDIS_URL"
	// EnvPrefix is the key prefix; empty means [DefaultPrefix].
	EnvPrefix = "FAILOVER_REDIS_PREFIX"
)

// FromEnv is [FromEnviron] over os.Environ().
func FromEnv(opts Options) (*Store, error) {
	return FromEnviron(os.Environ(), opts)
}

// FromEnviron returns a Store on the Redis named by FAILOVER_REDIS_URL in
// environ ("KEY=VALUE" strings, as os.Environ returns; the first
// occurrence counts), with the key prefix FAILOVER_REDIS_PREFIX unless
// opts sets one; nil and no error when FAILOVER_REDIS_URL is unset or
// empty. [failover.ConfigFromEnv] reads the endpoints; this gives the
// value for their Config's Shared, kept apart so that the failover
// package needs no Redis client:
//
//	cfg, err := failover.ConfigFromEnv()
//	...
//	store, err := redisshare.FromEnv(redisshare.Options{})
//	...
//	if store != nil {
//		defer store.Close()
//		cfg.Shared = store
//	}
//
// Its error names the variable, never the URL's password.
func FromEnviron(environ []string, opts Options) (*Store, error) {
	rawURL, prefix := lookup(environ, EnvURL), lookup(environ, EnvPrefix)
	if rawURL == "" {
		return nil, nil
	}
	if opts.Prefix == "" {
		opts.Prefix = prefix
	}
	s, err := Open(rawURL, opts)
	if err != nil {
		return nil, &envError{err: err}
	}
	return s, nil
}

// envError is an error of the URL in EnvURL.
type envError struct{ err error }

func (e *envError) Error() string { return EnvURL + ": " + e.err.Error() }
func (e *envError) Unwrap() error { return e.err }

// lookup returns the trimmed value of the first occurrence of name in
// environ.
func lookup(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
