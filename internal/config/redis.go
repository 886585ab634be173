package config

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/ratelimit/redislimit"
)

// sharedLimiter connects the Redis that rate_limits.redis names, or
// returns nil when budgets are per replica. It does not wait for Redis: an
// unreachable Redis is the fail_open policy's business at Check time, not
// a reason to refuse to start.
func (c *Config) SharedLimiter() (authz.SharedLimiter, func() error, error) {
	r := c.RateLimits.Redis
	if r.Addr == "" {
		return nil, func() error { return nil }, nil
	}
	var password string
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("redis password: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	client := redis.NewClient(&redis.Options{
		Addr:         r.Addr,
		Password:     password,
		DB:           r.DB,
		DialTimeout:  time.Second,
		ReadTimeout:  200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond,
		// Reads honour the Check's deadline (otherwise go-redis would not,
		// and the limiter would need a goroutine per call to stop waiting),
		// and a dead Redis fails fast instead of being redialled until the
		// timeout.
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	return redislimit.New(client, redislimit.Options{Prefix: r.Prefix}), client.Close, nil
}

// LimiterReady returns the readiness probe of a limiter SharedLimiter
// returned (nil for budgets per replica), and whether Checks need it: with
// fail_open they fall back to each replica's own budgets when Redis is
// gone, so its loss degrades a replica without making it unready.
func (c *Config) LimiterReady(l authz.SharedLimiter) (ping func(context.Context) error, needed bool) {
	p, ok := l.(interface{ Ping(context.Context) error })
	if !ok {
		return nil, false
	}
	return p.Ping, !c.RateLimits.Redis.FailOpen
}
