"""Class names of the semantic datasets, as data, in each dataset's canonical id order.

Conventions (decided once, here):
- ADE20K: the 150 names of the SceneParsing benchmark (the list LISA and LaSagnA prompt with).
- COCO-Stuff: the 80 COCO thing names followed by the 91 stuff names in raw-id order. A stuff name drops a trailing
  "-merged", "-other" or "-stuff" ("wall-other" -> "wall", "desk-stuff" -> "desk") and keeps every other hyphen
  ("wall-brick", "floor-wood"), which is exactly the question list the released LaSagnA-7B was trained with. This is
  the one 171-name list used for questions, answers and evaluation (fixes spec 9.5 and 9.7).
- Mapillary Vistas v1.2: the lower-cased "readable" names of config.json ("traffic sign (back)").
- Cityscapes: the 19 evaluation classes with their raw labelIds.
- PASCAL VOC / Context: the dataset names with the three run-together words split ("pottedplant" -> "potted plant",
  "tvmonitor" -> "tv monitor", "diningtable" -> "dining table") so that a language model reads them as words.

Lists are written as "; "-separated text so that they stay readable; `_names` turns them into tuples.
"""

from __future__ import annotations


def _names(text: str) -> tuple[str, ...]:
    """Split a "; "-separated list; whitespace inside a name (line breaks included) becomes one space."""
    return tuple(" ".join(name.split()) for name in text.split(";") if name.strip())


ADE20K_150 = _names(
    """
wall; building; sky; floor; tree; ceiling; road; bed; windowpane; grass; cabinet; sidewalk; person; earth; door;
table; mountain; plant; curtain; chair; car; water; painting; sofa; shelf; house; sea; mirror; rug; field;
armchair; seat; fence; desk; rock; wardrobe; lamp; bathtub; railing; cushion; base; box; column; signboard;
chest of drawers; counter; sand; sink; skyscraper; fireplace; refrigerator; grandstand; path; stairs; runway;
case; pool table; pillow; screen door; stairway; river; bridge; bookcase; blind; coffee table; toilet; flower;
book; hill; bench; countertop; stove; palm; kitchen island; computer; swivel chair; boat; bar; arcade machine;
hovel; bus; towel; light; truck; tower; chandelier; awning; streetlight; booth; television receiver; airplane;
dirt track; apparel; pole; land; bannister; escalator; ottoman; bottle; buffet; poster; stage; van; ship;
fountain; conveyer belt; canopy; washer; plaything; swimming pool; stool; barrel; basket; waterfall; tent; bag;
minibike; cradle; oven; ball; food; step; tank; trade name; microwave; pot; animal; bicycle; lake; dishwasher;
screen; blanket; sculpture; hood; sconce; vase; traffic light; tray; ashcan; fan; pier; crt screen; plate;
monitor; bulletin board; shower; radiator; glass; clock; flag
"""
)

COCO_THINGS_80 = _names(
    """
person; bicycle; car; motorcycle; airplane; bus; train; truck; boat; traffic light; fire hydrant; stop sign;
parking meter; bench; bird; cat; dog; horse; sheep; cow; elephant; bear; zebra; giraffe; backpack; umbrella;
handbag; tie; suitcase; frisbee; skis; snowboard; sports ball; kite; baseball bat; baseball glove; skateboard;
surfboard; tennis racket; bottle; wine glass; cup; fork; knife; spoon; bowl; banana; apple; sandwich; orange;
broccoli; carrot; hot dog; pizza; donut; cake; chair; couch; potted plant; bed; dining table; toilet; tv;
laptop; mouse; remote; keyboard; cell phone; microwave; oven; toaster; sink; refrigerator; book; clock; vase;
scissors; teddy bear; hair drier; toothbrush
"""
)

_COCO_STUFF_91_RAW = _names(
    """
banner; blanket; branch; bridge; building-other; bush; cabinet; cage; cardboard; carpet; ceiling-other;
ceiling-tile; cloth; clothes; clouds; counter; cupboard; curtain; desk-stuff; dirt; door-stuff; fence;
floor-marble; floor-other; floor-stone; floor-tile; floor-wood; flower; fog; food-other; fruit; furniture-other;
grass; gravel; ground-other; hill; house; leaves; light; mat; metal; mirror-stuff; moss; mountain; mud; napkin;
net; paper; pavement; pillow; plant-other; plastic; platform; playingfield; railing; railroad; river; road;
rock; roof; rug; salad; sand; sea; shelf; sky-other; skyscraper; snow; solid-other; stairs; stone; straw;
structural-other; table; tent; textile-other; towel; tree; vegetable; wall-brick; wall-concrete; wall-other;
wall-panel; wall-stone; wall-tile; wall-wood; water-other; waterdrops; window-blind; window-other; wood
"""
)

MAPILLARY_65 = _names(
    """
bird; ground animal; curb; fence; guard rail; barrier; wall; bike lane; crosswalk - plain; curb cut; parking;
pedestrian area; rail track; road; service lane; sidewalk; bridge; building; tunnel; person; bicyclist;
motorcyclist; other rider; lane marking - crosswalk; lane marking - general; mountain; sand; sky; snow; terrain;
vegetation; water; banner; bench; bike rack; billboard; catch basin; cctv camera; fire hydrant; junction box;
mailbox; manhole; phone booth; pothole; street light; pole; traffic sign frame; utility pole; traffic light;
traffic sign (back); traffic sign (front); trash can; bicycle; boat; bus; car; caravan; motorcycle; on rails;
other vehicle; trailer; truck; wheeled slow; car mount; ego vehicle
"""
)

_PASCAL_VOC_20_RAW = _names(
    """
aeroplane; bicycle; bird; boat; bottle; bus; car; cat; chair; cow; diningtable; dog; horse; motorbike; person;
pottedplant; sheep; sofa; train; tvmonitor
"""
)

_PASCAL_CONTEXT_59_RAW = _names(
    """
aeroplane; bag; bed; bedclothes; bench; bicycle; bird; boat; book; bottle; building; bus; cabinet; car; cat;
ceiling; chair; cloth; computer; cow; cup; curtain; dog; door; fence; floor; flower; food; grass; ground; horse;
keyboard; light; motorbike; mountain; mouse; person; plate; platform; pottedplant; road; rock; sheep; shelves;
sidewalk; sign; sky; snow; sofa; table; track; train; tree; truck; tvmonitor; wall; water; window; wood
"""
)

_PASCAL_CONTEXT_459_RAW = _names(
    """
accordion; aeroplane; air conditioner; antenna; artillery; ashtray; atrium; baby carriage; bag; ball; balloon;
bamboo weaving; barrel; baseball bat; basket; basketball backboard; bathtub; bed; bedclothes; beer; bell; bench;
bicycle; binoculars; bird; bird cage; bird feeder; bird nest; blackboard; board; boat; bone; book; bottle;
bottle opener; bowl; box; bracelet; brick; bridge; broom; brush; bucket; building; bus; cabinet; cabinet door;
cage; cake; calculator; calendar; camel; camera; camera lens; can; candle; candle holder; cap; car; card; cart;
case; casette recorder; cash register; cat; cd; cd player; ceiling; cell phone; cello; chain; chair; chessboard;
chicken; chopstick; clip; clippers; clock; closet; cloth; clothes tree; coffee; coffee machine; comb; computer;
concrete; cone; container; control booth; controller; cooker; copying machine; coral; cork; corkscrew; counter;
court; cow; crabstick; crane; crate; cross; crutch; cup; curtain; cushion; cutting board; dais; disc; disc case;
dishwasher; dock; dog; dolphin; door; drainer; dray; drink dispenser; drinking machine; drop; drug; drum; drum
kit; duck; dumbbell; earphone; earrings; egg; electric fan; electric iron; electric pot; electric saw;
electronic keyboard; engine; envelope; equipment; escalator; exhibition booth; extinguisher; eyeglass; fan;
faucet; fax machine; fence; ferris wheel; fire extinguisher; fire hydrant; fire place; fish; fish tank;
fishbowl; fishing net; fishing pole; flag; flagstaff; flame; flashlight; floor; flower; fly; foam; food;
footbridge; forceps; fork; forklift; fountain; fox; frame; fridge; frog; fruit; funnel; furnace; game
controller; game machine; gas cylinder; gas hood; gas stove; gift box; glass; glass marble; globe; glove; goal;
grandstand; grass; gravestone; ground; guardrail; guitar; gun; hammer; hand cart; handle; handrail; hanger; hard
disk drive; hat; hay; headphone; heater; helicopter; helmet; holder; hook; horse; horse-drawn carriage; hot-air
balloon; hydrovalve; ice; inflator pump; ipod; iron; ironing board; jar; kart; kettle; key; keyboard; kitchen
range; kite; knife; knife block; ladder; ladder truck; ladle; laptop; leaves; lid; life buoy; light; light bulb;
lighter; line; lion; lobster; lock; machine; mailbox; mannequin; map; mask; mat; match book; mattress; menu;
metal; meter box; microphone; microwave; mirror; missile; model; money; monkey; mop; motorbike; mountain; mouse;
mouse pad; musical instrument; napkin; net; newspaper; oar; ornament; outlet; oven; oxygen bottle; pack; pan;
paper; paper box; paper cutter; parachute; parasol; parterre; patio; pelage; pen; pen container; pencil; person;
photo; piano; picture; pig; pillar; pillow; pipe; pitcher; plant; plastic; plate; platform; player; playground;
pliers; plume; poker; poker chip; pole; pool table; postcard; poster; pot; pottedplant; printer; projector;
pumpkin; rabbit; racket; radiator; radio; rail; rake; ramp; range hood; receiver; recorder; recreational
machines; remote control; road; robot; rock; rocket; rocking horse; rope; rug; ruler; runway; saddle; sand; saw;
scale; scanner; scissors; scoop; screen; screwdriver; sculpture; scythe; sewer; sewing machine; shed; sheep;
shell; shelves; shoe; shopping cart; shovel; sidecar; sidewalk; sign; signal light; sink; skateboard; ski; sky;
sled; slippers; smoke; snail; snake; snow; snowmobiles; sofa; spanner; spatula; speaker; speed bump; spice
container; spoon; sprayer; squirrel; stage; stair; stapler; stick; sticky note; stone; stool; stove; straw;
stretcher; sun; sunglass; sunshade; surveillance camera; swan; sweeper; swim ring; swimming pool; swing; switch;
table; tableware; tank; tap; tape; tarp; telephone; telephone booth; tent; tire; toaster; toilet; tong; tool;
toothbrush; towel; toy; toy car; track; train; trampoline; trash bin; tray; tree; tricycle; tripod; trophy;
truck; tube; turtle; tvmonitor; tweezers; typewriter; umbrella; unknown; vacuum cleaner; vending machine; video
camera; video game console; video player; video tape; violin; wakeboard; wall; wallet; wardrobe; washing
machine; watch; water; water dispenser; water pipe; water skate board; watermelon; whale; wharf; wheel;
wheelchair; window; window blinds; wineglass; wire; wood; wool
"""
)


COCO_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
"""stuffthingmaps pixel values (COCO category id - 1) that no category uses; read as ignore."""
COCO_STUFF_RAW_IDS = tuple(i for i in range(182) if i not in COCO_UNUSED_RAW_IDS)
"""Raw pixel value of each of the 171 classes: things 0..89 minus the unused ids, then stuff 91..181."""
_SUFFIXES = ("-merged", "-other", "-stuff")


def _strip_suffix(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


COCO_STUFF_171 = COCO_THINGS_80 + tuple(_strip_suffix(n) for n in _COCO_STUFF_91_RAW)

CITYSCAPES_19 = (
    ("road", 7),
    ("sidewalk", 8),
    ("building", 11),
    ("wall", 12),
    ("fence", 13),
    ("pole", 17),
    ("traffic light", 19),
    ("traffic sign", 20),
    ("vegetation", 21),
    ("terrain", 22),
    ("sky", 23),
    ("person", 24),
    ("rider", 25),
    ("car", 26),
    ("truck", 27),
    ("bus", 28),
    ("train", 31),
    ("motorcycle", 32),
    ("bicycle", 33),
)
"""(name, labelId) of the 19 Cityscapes training classes, in trainId order 0..18."""

_PASCAL_READABLE = {"pottedplant": "potted plant", "tvmonitor": "tv monitor", "diningtable": "dining table"}


def _readable(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_PASCAL_READABLE.get(n, n) for n in names)


PASCAL_VOC_20 = _readable(_PASCAL_VOC_20_RAW)
PASCAL_CONTEXT_59 = _readable(_PASCAL_CONTEXT_59_RAW)
PASCAL_CONTEXT_459 = _readable(_PASCAL_CONTEXT_459_RAW)
