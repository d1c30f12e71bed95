package hubcontrol

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestPollWatch(t *testing.T) {
	var mu sync.Mutex
	rounds := [][]Status{
		{{ProjectID: "a", State: Starting}, {ProjectID: "b", State: Running, IP: "10.0.0.2"}},
		{{ProjectID: "a", State: Starting}, {ProjectID: "b", State: Running, IP: "10.0.0.2"}}, // no change
		nil, // error round
		{{ProjectID: "a", State: Running, IP: "10.0.0.1"}},                     // a runs, b gone
		{{ProjectID: "a", State: Running, IP: "10.0.0.1", Error: "OOMKilled"}}, // reason appears
	}
	i := 0
	list := func(context.Context) ([]Status, error) {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(rounds) {
			return rounds[len(rounds)-1], nil
		}
		r := rounds[i]
		i++
		if r == nil {
			return nil, errors.New("cache not synced")
		}
		return r, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := PollWatch(ctx, list, time.Millisecond)
	want := []Status{
		{ProjectID: "a", State: Starting},
		{ProjectID: "b", State: Running, IP: "10.0.0.2"},
		{ProjectID: "a", State: Running, IP: "10.0.0.1"},
		{ProjectID: "b", State: Opened},
		{ProjectID: "a", State: Running, IP: "10.0.0.1", Error: "OOMKilled"},
	}
	for n, w := range want {
		select {
		case got := <-ch:
			if !sameStatus(got, w) || got.ProjectID != w.ProjectID {
				t.Fatalf("event %d = %+v, want %+v", n, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d never came", n)
		}
	}
	cancel()
	for range ch { // drains, then closes
	}
}
