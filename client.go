package failover

import "net/http"

// WrapClient returns a copy of c whose Transport is a failover [Transport]
// built from cfg, with c's own transport as cfg.Base (unless cfg.Base is
// set). c itself is not modified; its timeout, cookie jar and redirect
// policy carry over. A nil c means http.DefaultClient. [Wrap] does the
// same and returns the Transport too.
//
//	client, err := failover.WrapClient(http.DefaultClient, cfg)
func WrapClient(c *http.Client, cfg Config) (*http.Client, error) {
	client, _, err := Wrap(c, cfg)
	return client, err
}
