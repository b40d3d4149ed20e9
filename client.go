package failover

import "net/http"

// WrapClient returns a copy of c whose Transport is a failover [Transport]
// built from cfg, with c's own transport as cfg.Base (unless cfg.Base is
// set). c itself is not modified; its timeout, cookie jar and redirect
// policy carry over. A nil c means http.DefaultClient.
//
//	client, err := failover.WrapClient(http.DefaultClient, cfg)
func WrapClient(c *http.Client, cfg Config) (*http.Client, error) {
	if c == nil {
		c = http.DefaultClient
	}
	if cfg.Base == nil {
		cfg.Base = c.Transport
	}
	t, err := New(cfg)
	if err != nil {
		return nil, err
	}
	out := *c
	out.Transport = t
	return &out, nil
}
