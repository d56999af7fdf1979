package fuzzcluster

import "testing"

func TestExtremesAreValid(t *testing.T) {
	for _, e := range Extremes(DefaultSizes) {
		if err := e.View.Cluster.Validate(); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
	}
}

func TestSeedsBuildValidViews(t *testing.T) {
	examples, err := Examples("../..")
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range Seeds(examples) {
		if _, ok := View(in); !ok {
			t.Errorf("seed %d does not build a valid view", i)
		}
	}
}
