package registry

import (
	"fmt"

	dockerconfig "github.com/docker/cli/cli/config"
)

// lookupCredentials is the credentials callback handed to containerd's
// authorizer. host is the endpoint being contacted.
func (c *Client) lookupCredentials(host string) (string, string, error) {
	if c.opts.credentials != nil {
		user, secret, err := c.opts.credentials(host)
		if err != nil {
			return "", "", fmt.Errorf("credentials for %s: %w", host, err)
		}
		if user != "" || secret != "" {
			return user, secret, nil
		}
	}
	return dockerConfigCredentials(c.opts.dockerConfigDir, host)
}

// dockerConfigCredentials reads credentials for host from dir/config.json
// (dir "" means $DOCKER_CONFIG or ~/.docker) using the docker CLI's own
// loader, which decodes "auth", "username"/"password" and "identitytoken"
// entries and runs credential helpers (credsStore, credHelpers).
func dockerConfigCredentials(dir, host string) (string, string, error) {
	cf, err := dockerconfig.Load(dir)
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	key := host
	if host == "registry-1.docker.io" {
		key = "docker.io" // the docker CLI stores Hub credentials under index.docker.io
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s from %s: %w", host, cf.Filename, err)
	}
	if ac.IdentityToken != "" {
		// containerd treats an empty username with a secret as a refresh token.
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}
