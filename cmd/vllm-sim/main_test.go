package main

import (
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--error-rate", "2"}, "error rate"},
		{[]string{"--error-status", "200"}, "error status"},
		{[]string{"--ttft", "-1s"}, "ttft"},
		{[]string{"--nope"}, "not defined"},
		{[]string{"--listen", "256.0.0.1:0"}, "listen"},
	}
	for _, tc := range cases {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%v) = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}
