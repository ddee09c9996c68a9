// Command provisioner binds PersistentVolumeClaims of one StorageClass by creating a
// hostPath PersistentVolume per claim, and deletes released volumes it created unless
// their reclaim policy is Retain.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

// The PV controller names the provisioner on a claim only once it found no existing
// volume to bind it to (such as a retained volume pre-bound to the claim).
const (
	storageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	betaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
)

type provisioner struct {
	// One token per claim being provisioned: creates run in parallel, up to its capacity.
	slots   chan struct{}
	client  kubernetes.Interface
	name    string
	class   string
	baseDir string
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to the kubeconfig")
	class := flag.String("storage-class", "standard", "StorageClass whose claims are provisioned")
	name := flag.String("provisioner-name", "neurallog.io/test-provisioner", "provisioner name of the StorageClass")
	baseDir := flag.String("base-dir", "/tmp/neurallog-pv", "hostPath root recorded in the volumes")
	qps := flag.Float64("kube-api-qps", 200, "client-side request rate limit")
	burst := flag.Int("kube-api-burst", 400, "client-side request burst")
	workers := flag.Int("workers", 16, "claims provisioned at once")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("provisioner: kubeconfig: %v", err)
	}
	config.QPS = float32(*qps)
	config.Burst = *burst
	p := &provisioner{slots: make(chan struct{}, max(*workers, 1)), client: kubernetes.NewForConfigOrDie(config), name: *name, class: *class, baseDir: *baseDir}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(p.client, 10*time.Minute)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()
	_, _ = claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { p.provisionAsync(ctx, obj) },
		UpdateFunc: func(_, obj interface{}) { p.provisionAsync(ctx, obj) },
	})
	_, _ = volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { p.reclaim(ctx, obj) },
		UpdateFunc: func(_, obj interface{}) { p.reclaim(ctx, obj) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("provisioner: serving StorageClass %s as %s", p.class, p.name)
	<-ctx.Done()
}

// provisionAsync provisions in the background, blocking the informer only while every
// slot is taken: one create at a time made the volumes, not the API server, the limit of
// large runs. Two passes over one claim are harmless: the second gets AlreadyExists.
func (p *provisioner) provisionAsync(ctx context.Context, obj interface{}) {
	p.slots <- struct{}{}
	go func() {
		defer func() { <-p.slots }()
		p.provision(ctx, obj)
	}()
}

func (p *provisioner) provision(ctx context.Context, obj interface{}) {
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || claim.Spec.VolumeName != "" || claim.DeletionTimestamp != nil {
		return
	}
	if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != p.class {
		return
	}
	if claim.Annotations[storageProvisioner] != p.name && claim.Annotations[betaStorageProvisioner] != p.name {
		return
	}
	size, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return
	}
	pvName := fmt.Sprintf("pvc-%s", claim.UID)
	dir := filepath.Join(p.baseDir, pvName)
	// Pods on the real test node run non-root and a hostPath volume ignores fsGroup: the
	// directory is made writable for any uid, as a freshly formatted volume would be.
	if err := os.MkdirAll(dir, 0o777); err != nil {
		log.Printf("provisioner: create %s: %v", dir, err)
		return
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		log.Printf("provisioner: chmod %s: %v", dir, err)
		return
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        pvName,
			Annotations: map[string]string{provisionedBy: p.name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              p.class,
			ClaimRef: &corev1.ObjectReference{
				Kind:       "PersistentVolumeClaim",
				Namespace:  claim.Namespace,
				Name:       claim.Name,
				UID:        claim.UID,
				APIVersion: "v1",
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir},
			},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	switch {
	case err == nil:
		log.Printf("provisioner: created %s for %s/%s", pvName, claim.Namespace, claim.Name)
	case apierrors.IsAlreadyExists(err):
	default:
		log.Printf("provisioner: create %s: %v", pvName, err)
	}
}

func (p *provisioner) reclaim(ctx context.Context, obj interface{}) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Annotations[provisionedBy] != p.name || pv.Status.Phase != corev1.VolumeReleased {
		return
	}
	// A retained volume keeps its data for whoever binds it next (spec.redis.retainStorage).
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return
	}
	err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		log.Printf("provisioner: delete %s: %v", pv.Name, err)
	}
}
