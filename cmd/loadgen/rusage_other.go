//go:build !unix

package main

// cpuSeconds is not measured on this platform: -1.
func cpuSeconds() float64 { return -1 }
