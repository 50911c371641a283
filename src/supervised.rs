//! `Spec`: the one way the service crate hands an actor of its own to the root
//! supervisor (a [`ChildSpec`]): its name, the arguments each incarnation starts with,
//! and the running incarnation (for the chaos hooks and `/admin/actors`, through the
//! supervisor).

use std::marker::PhantomData;
use std::sync::Mutex;

use ractor::{Actor, ActorCell, ActorId};
use todo_actors::supervisor::{ChildSpec, SpawnFuture};

/// How to (re)start an actor of type `A` under the root supervisor.
pub struct Spec<A: Actor> {
    name: &'static str,
    args: A::Arguments,
    running: Mutex<Option<ActorCell>>,
    actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Spec<A> {
    /// Each incarnation of `name` starts with a clone of `args`.
    pub fn new(name: &'static str, args: A::Arguments) -> Self {
        Self {
            name,
            args,
            running: Mutex::new(None),
            actor: PhantomData,
        }
    }
}

impl<A> ChildSpec for Spec<A>
where
    A: Actor + Default,
    A::Arguments: Clone + Sync,
{
    fn name(&self) -> &str {
        self.name
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let (actor, _) =
                Actor::spawn_linked(None, A::default(), self.args.clone(), supervisor).await?;
            let cell = actor.get_cell();
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(cell.clone());
            Ok(cell)
        })
    }

    fn clear(&self, id: ActorId) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|c| c.get_id() == id) {
            *running = None;
        }
    }
}
