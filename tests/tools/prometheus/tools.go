//go:build tools

// Package tools pins the commands built from this module (go build ./... builds nothing).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
